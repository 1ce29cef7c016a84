"""Services: everything that talks to Bitrix24 or the database; no Flask request in here."""
