"""The models `python -m models.train` trains: one `Task` per model (models/train/task.py); a new model is one
task module and one entry here."""

from .mol_task import MOLTask
from .mtstwn_task import MTSTWNTask
from .stt_task import STTTask

TASKS = {t.name: t for t in (MOLTask(), MTSTWNTask(), STTTask())}
