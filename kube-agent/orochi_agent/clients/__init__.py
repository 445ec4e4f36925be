"""The agent's only I/O: the queue (SQS), the control-plane API and, for the cnpg driver, Kubernetes.

Each client maps its library's errors to its own once; nothing else imports boto3, urllib3 or kubernetes.
"""
