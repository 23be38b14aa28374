"""Embedded node agent: realises Deployment objects as supervised local processes (the kubelet of one machine)."""
