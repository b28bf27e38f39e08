"""Registry of tasks: the name used in params.yaml -> the class that implements it."""

from __future__ import annotations

from dlworkflow.errors import ConfigError
from dlworkflow.tasks.base import Task
from dlworkflow.tasks.classification import ClassificationTask
from dlworkflow.tasks.forecasting import ForecastingTask
from dlworkflow.tasks.regression import RegressionTask

TASKS: dict[str, type[Task]] = {
    cls.name: cls for cls in (ClassificationTask, RegressionTask, ForecastingTask)
}


def get_task(name: str) -> Task:
    """The task registered under `name`, or a ConfigError listing the valid names."""
    try:
        return TASKS[name]()
    except KeyError:
        raise ConfigError(f"unknown task {name!r}; registered tasks: "
                          f"{', '.join(sorted(TASKS))}") from None


__all__ = ["TASKS", "Task", "get_task"]
