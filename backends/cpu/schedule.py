"""The cpu backend's default schedules live in backends/host/schedule.py (shared with the npu
simulator and `anychip tune`); this module keeps the old import path working."""

from anychip.backends.host.schedule import (injective_rule, pipeline, reduction_rules,
                                            schedule_rules)

__all__ = ["injective_rule", "pipeline", "reduction_rules", "schedule_rules"]
