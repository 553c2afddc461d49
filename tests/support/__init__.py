"""Helpers the tests share: fake checkpoints in public key layouts, synthetic leaderboard records, the record reader."""
