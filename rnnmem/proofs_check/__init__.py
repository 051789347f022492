"""Claims as executable checks, and the report writer."""

from .registry import (
    BUDGETS as BUDGETS,
    Claim as Claim,
    Context as Context,
    Evidence as Evidence,
    Result as Result,
    all_claims as all_claims,
    claim as claim,
    get_claim as get_claim,
    run_claims as run_claims,
)
from .report import summary_table as summary_table, write_report as write_report
