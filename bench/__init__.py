"""Performance measurements that print ratios measured side by side (see bench/README.md)."""
