"""Tasks: what comes after the model for each head (data, loss, metric, parity, metadata)."""
from hrnet_edge.tasks.base import EvalResult, Task, get_task, registered_tasks, torch_infer

__all__ = ["EvalResult", "Task", "get_task", "registered_tasks", "torch_infer"]
