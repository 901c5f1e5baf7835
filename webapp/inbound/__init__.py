"""Hearing back: bounces, complaints, mailto unsubscribes and replies, by mail or webhook."""
