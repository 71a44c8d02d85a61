"""Talking to Kafka: the plain clients and their connection settings, producing, ACLs, the clients' logs."""
