"""HubSpot as a CRM source: the hook (``hook``), the search cursor (``cursor``), response decoding
(``pages``) and :class:`~conduit.sources.hubspot.source.HubSpotSource` (``source``). Nothing is
imported here: the registry and the provider's connection type import the module they need."""
