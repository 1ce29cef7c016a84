"""The one version number: the distribution's, the User-Agent's and the OpenAPI document's."""

__version__ = "0.9.0"
