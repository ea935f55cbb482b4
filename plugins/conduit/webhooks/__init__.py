"""Inbound webhooks: HubSpot change notifications, verified and queued in Redis for the sync."""
