"""Hearing back: bounces, complaints, mailto unsubscribes and replies, by mail or webhook.
Knows our mail again by ``mailout/``'s VERP token; acts through ``subscribers/``."""
