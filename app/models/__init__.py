from .crm import BITRIX24_CRM_NAME, CRM, ClientCRMAuth
from .event import BitrixEvent

__all__ = ["BITRIX24_CRM_NAME", "CRM", "ClientCRMAuth", "BitrixEvent"]
