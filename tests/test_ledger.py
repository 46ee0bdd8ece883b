"""The committed ledger (figures/claims.csv) agrees with its stored evidence: every p-value,
Holm-adjusted p, difference and verdict recomputes with mielib.stats from the predictions the
tests read (figures/claims_evidence/), and the analyses notebooks' rows all have evidence."""

import pandas as pd
import pytest

from mielib import claims, runtime

FIGURES = runtime.ROOT / "figures"
#: Notebooks whose every row must carry evidence (04 and 05 gain theirs on their next run).
MIEX = ("06_fig5_au_sources", "07_fig6_scaling", "08_fig7_table3", "09_supp_tables")
WITH_EVIDENCE = (*MIEX, "10_augacn", "11_eidnet")


@pytest.fixture(scope="module")
def check():
    return claims.verify(FIGURES)


def test_every_recomputed_value_matches_the_ledger(check):
    assert len(check), "no evidence committed under figures/claims_evidence/"
    bad = check[~check["match"]]
    assert bad.empty, "rows whose ledger values do not recompute:\n" + bad.to_string()


@pytest.mark.parametrize("notebook", WITH_EVIDENCE)
def test_every_row_of_the_analyses_notebooks_has_evidence(check, notebook):
    ledger = claims.read(FIGURES)
    rows = ledger[ledger["notebook"] == notebook]
    assert len(rows) > 0, f"{notebook} wrote no claims"
    have = set(check.loc[check["notebook"] == notebook, "claim"])
    assert set(rows["claim"]) == have
    for col in ("test", "verdict"):
        assert (rows[col] != "").all()
    assert set(rows["verdict"]) <= set(claims.VERDICTS)
    tested = rows[~rows["test"].str.startswith("intersection-union")]
    assert (tested["p"] != "").all() and (tested["p_holm"] != "").all()
    # the lab's built-in advantage for MiE-X is stated beside every row that trains on it
    if notebook in MIEX:
        assert tested["note"].str.contains("lab effect").all()
