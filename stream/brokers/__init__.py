"""Brokers this machine runs itself: the embedded default (Tansu) and a real Apache Kafka node."""
