"""The local stack: moto server for DynamoDB and SQS, the API under chalice local (and, later, the agent)."""
