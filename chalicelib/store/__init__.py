"""Persistence: the only package that talks to DynamoDB."""
