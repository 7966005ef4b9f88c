"""docs/configuration.md is what the settings declaration says (``tools/settings_doc.py``),
and the links between the docs lead somewhere."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_configuration_page_is_generated_from_the_declaration():
    spec = importlib.util.spec_from_file_location("settings_doc", ROOT / "tools/settings_doc.py")
    assert spec is not None and spec.loader is not None
    settings_doc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(settings_doc)
    page = (ROOT / "docs/configuration.md").read_text(encoding="utf-8")
    assert page == settings_doc.page(), (
        "docs/configuration.md is out of date: python tools/settings_doc.py > docs/configuration.md"
    )


def test_every_setting_has_its_meaning_on_the_page():
    from services.order_queue.settings import setting_names

    page = (ROOT / "docs/configuration.md").read_text(encoding="utf-8")
    for name in setting_names():
        [row] = [line for line in page.splitlines() if line.startswith(f"| `{name}` |")]
        assert not row.endswith("|  |"), f"{name} has no comment in the declaration"


def test_every_link_between_the_docs_leads_to_a_file():
    """The README, the changelog and docs/ link to each other and to pictures by relative
    paths; a page moved into docs/ keeps its links only if they are relative to it."""
    import re

    pages = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = [
        f"{page.relative_to(ROOT)}: {target}"
        for page in pages
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8"))
        if not target.startswith(("http://", "https://")) and not (page.parent / target).exists()
    ]
    assert broken == []
