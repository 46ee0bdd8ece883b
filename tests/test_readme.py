"""The README points only at what a clone of the repository holds."""

import re

from mielib import runtime

README = runtime.ROOT / "README.md"


def test_readme_links_and_paths_stay_inside_the_repository():
    text = README.read_text(encoding="utf-8")
    outside = re.findall(r"(?<![\w.])\.\./[\w./-]+", text)
    assert not outside, f"README refers to files outside the repository: {outside}"
    for target in re.findall(r"\]\(([^)#\s]+)", text):
        if re.match(r"[a-z]+://|mailto:", target):
            continue
        assert (README.parent / target).exists(), f"README links {target}, which the repository does not hold"
