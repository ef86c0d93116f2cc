"""Transactional outbox: events stored with the state that produced them, relayed at least once."""
