"""Performance measurements that print ratios measured side by side (docs/scale.md, "Measured (bench/)")."""
