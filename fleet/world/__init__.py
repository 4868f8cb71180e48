"""The simulated world: device profiles and budgets, the simpy round model, availability, shared
links, keyed draws and the ledger of what happened. It runs no Flower and reads no YAML.
"""

from fleet.world.async_world import AsyncWorld
from fleet.world.ledger import DEVICE_COLUMNS, Ledger
from fleet.world.builtin_profiles import PROFILES, PROFILE_SOURCES, get_profile
from fleet.world.profile_tables import format_profile_sources, format_profile_table
from fleet.world.profiles import (
    AVAILABILITY_MODELS,
    BUDGETS,
    BudgetProfile,
    DeviceProfile,
    FIGURES,
    MEASURED_COMPACTION_SPEEDUP,
    PAPER_SPARSE_SPEEDUP,
    REQUIRED_FIGURES,
)
from fleet.world.sync_world import SimWorld
from fleet.world.timing import DEFAULT_PLAN_QUANTILE

__all__ = [
    "AVAILABILITY_MODELS",
    "AsyncWorld",
    "BUDGETS",
    "BudgetProfile",
    "DEFAULT_PLAN_QUANTILE",
    "DEVICE_COLUMNS",
    "DeviceProfile",
    "FIGURES",
    "Ledger",
    "MEASURED_COMPACTION_SPEEDUP",
    "PAPER_SPARSE_SPEEDUP",
    "PROFILES",
    "PROFILE_SOURCES",
    "REQUIRED_FIGURES",
    "SimWorld",
    "format_profile_sources",
    "format_profile_table",
    "get_profile",
]
