"""``conduit.hooks.hubspot.HubSpotHook`` (the provider's connection type) lives with the HubSpot source."""

from conduit.sources.hubspot.hook import HubSpotHook, objects_path  # noqa: F401
