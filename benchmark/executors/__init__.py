"""Executors: who runs the runs of a sweep - this process, local worker processes, or Slurm jobs."""
