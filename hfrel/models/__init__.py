"""Model families: specs that say which module plays which role, and the registry of supported ones."""

from hfrel.models._spec import FamilySpec, register_family, registered_families, supported_models

__all__ = ["FamilySpec", "register_family", "registered_families", "supported_models"]
