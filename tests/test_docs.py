"""Documentation that ships: every reference in the project resolves inside the repository.

(a) No project file points at material a user of the repository does not have: a `shared/` folder
    next to the checkout, or developer-guide section numbers (a guide page name followed by a
    section sign, `R<n>`, `section <n>` or a number), or a guide page named outside `docs/`.
(b) Every `docs/<page>.md` mentioned anywhere exists, every `docs/<page>.md#<anchor>` names a
    heading of that page (GitHub's anchor rules), and every relative Markdown link resolves.

References to the documentation use one format: `docs/<page>.md#<anchor>`, where the anchor is
the heading's GitHub anchor (e.g. `docs/methods.md#darht-loss-and-profiles`).
"""
from __future__ import annotations

import re
import subprocess
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SKIP_DIRS = {".git", ".venv", "venv", "__pycache__", ".pytest_cache", "runs", "results", "build", "node_modules"}
MAX_BYTES = 2_000_000
GUIDES = r"(?:methods|style|ray|evaluation|design)"

FORBIDDEN = {
    "a shared/ folder outside the repository": re.compile(r"\.\./shared"),
    "the developer guide's reference folder": re.compile(r"shared/+reference"),
    "a developer-guide section number": re.compile(GUIDES + r"\.md,?[ \t]*(?:§|R\d|section[ \t]+\d|\d)"),
}
# A guide page named without docs/ in front (a bare page name) refers to the developer guide.
BARE_GUIDE = re.compile(r"(?<![\w/.-])" + GUIDES + r"\.md\b")
DOC_REF = re.compile(r"\bdocs/([\w.-]+?\.md)(?:#([\w-]+))?")
MD_LINK = re.compile(r"\]\(([^)\s]+)\)")
HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$")
FENCE = re.compile(r"^ {0,3}(```|~~~)")


def project_files() -> list[Path]:
    """Tracked and untracked-but-not-ignored files (git), else a walk that skips build outputs."""
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             capture_output=True, check=True, timeout=60).stdout.decode()
        paths = [ROOT / p for p in out.split("\0") if p]
    except (OSError, subprocess.SubprocessError):
        paths = [p for p in ROOT.rglob("*") if not any(part in SKIP_DIRS or part.endswith(".egg-info")
                                                       for part in p.relative_to(ROOT).parts)]
    return sorted(p for p in paths if p.is_file() and not SKIP_DIRS.intersection(p.relative_to(ROOT).parts))


def read_text(path: Path) -> str | None:
    """The file's text, or None for binary and very large files."""
    if path.stat().st_size > MAX_BYTES:
        return None
    data = path.read_bytes()
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def texts() -> dict[str, str]:
    out = {}
    for path in project_files():
        text = read_text(path)
        if text is not None:
            out[path.relative_to(ROOT).as_posix()] = text
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the text (code spans and links unwrapped), lower case,
    punctuation other than '-' and '_' dropped, spaces to hyphens."""
    text = re.sub(r"`([^`]*)`", r"\1", heading)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """The anchors of every heading outside fenced code blocks; repeats get -1, -2, ..."""
    seen: Counter[str] = Counter()
    out, fenced = set(), False
    for line in markdown.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        match = None if fenced else HEADING.match(line)
        if match:
            base = slug(match.group(2))
            out.add(base if not seen[base] else f"{base}-{seen[base]}")
            seen[base] += 1
    return out


def violations(name: str, text: str) -> list[str]:
    """Part (a) for one file: 'name:line: what (text)' per offending line."""
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        for what, pattern in FORBIDDEN.items():
            if pattern.search(line):
                found.append(f"{name}:{number}: refers to {what}: {line.strip()}")
        if not name.startswith("docs/") and BARE_GUIDE.search(line):
            found.append(f"{name}:{number}: names a guide page outside docs/: {line.strip()}")
    return found


def broken_doc_refs(name: str, text: str, pages: dict[str, str]) -> list[str]:
    """Part (b) for one file: docs/<page>.md references whose page or anchor does not exist."""
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        for page, anchor in DOC_REF.findall(line):
            if page not in pages:
                found.append(f"{name}:{number}: docs/{page} does not exist")
            elif anchor and anchor not in anchors(pages[page]):
                found.append(f"{name}:{number}: docs/{page} has no heading with anchor #{anchor}")
    return found


def broken_links(name: str, text: str, files: dict[str, str]) -> list[str]:
    """Relative Markdown links of one .md file whose target file or heading does not exist."""
    found = []
    folder = (ROOT / name).parent
    for number, line in enumerate(text.splitlines(), start=1):
        for target in MD_LINK.findall(line):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            resolved = (folder / path).resolve() if path else ROOT / name
            try:
                rel = resolved.relative_to(ROOT).as_posix()
            except ValueError:
                found.append(f"{name}:{number}: link {target} leaves the repository")
                continue
            if not resolved.exists():
                found.append(f"{name}:{number}: link {target}: {rel} does not exist")
            elif anchor and rel.endswith(".md") and anchor not in anchors(files.get(rel, resolved.read_text())):
                found.append(f"{name}:{number}: link {target}: {rel} has no heading with anchor #{anchor}")
    return found


def doc_pages() -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(DOCS.glob("*.md"))}


# ----------------------------------------------------------------------------- the project itself

def test_no_reference_to_material_outside_the_repository() -> None:
    found = [v for name, text in texts().items() for v in violations(name, text)]
    assert not found, "\n".join(found)


def test_docs_references_name_existing_pages_and_headings() -> None:
    pages = doc_pages()
    files = texts()
    found = [v for name, text in files.items() for v in broken_doc_refs(name, text, pages)]
    assert not found, "\n".join(found)
    used = sum(len(DOC_REF.findall(text)) for name, text in files.items() if not name.startswith("docs/"))
    assert used >= 20, f"only {used} docs/ references outside docs/: the scan is not finding them"


def test_markdown_links_resolve() -> None:
    files = texts()
    found = [v for name, text in files.items() if name.endswith(".md") for v in broken_links(name, text, files)]
    assert not found, "\n".join(found)


def test_every_docs_page_is_indexed() -> None:
    index = (DOCS / "README.md").read_text(encoding="utf-8")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for page in doc_pages():
        if page != "README.md":
            assert f"]({page})" in index, f"docs/README.md does not list {page}"
            assert f"](docs/{page})" in readme, f"README.md's Documentation section does not list docs/{page}"


# ----------------------------------------------------------------------------- the checks catch mistakes

def test_slugs_follow_github_rules() -> None:
    assert slug("DARHT: loss and profiles") == "darht-loss-and-profiles"
    assert slug("B-MTARD and MTARD") == "b-mtard-and-mtard"
    assert slug("KL scale and kd_scale") == "kl-scale-and-kd_scale"
    assert slug("The `rand` version / EOT") == "the-rand-version--eot"
    assert slug("See [the code](../x.py)") == "see-the-code"
    assert anchors("# A\n## A\n```\n# not a heading\n```\n### A\n") == {"a", "a-1", "a-2"}


def ref(page: str, anchor: str = "") -> str:
    """A docs reference built at run time, so that this file itself holds no broken one."""
    return f"docs/{page}" + (f"#{anchor}" if anchor else "")


def test_planted_bad_references_are_caught() -> None:
    planted = {  # built up from pieces so that this file itself stays clean
        "see " + "..".join(["", "/shared/x"]): 1,
        "defined in shared" + "/reference/x": 1,
        "as in style" + ".md R13": 2,      # a section number, and a guide page named outside docs/
        "see ray" + ".md section 8": 2,
        "methods" + ".md 1.3": 2,
        "evaluation" + ".md §2": 2,
        "see ray" + ".md for the threads": 1,
        "see " + ref("ray" + ".md") + " for the threads": 0,
    }
    for line, expected in planted.items():
        assert len(violations("trainers/x.py", line)) == expected, line
    assert violations(ref("x.md"), "[pages](ray" + ".md#threads)") == []  # relative links inside docs/
    pages = {"guide.md": "# Guide\n## DARHT\n### DARHT: loss and profiles\n"}
    ok = ", ".join([ref("guide.md", "darht"), ref("guide.md", "darht-loss-and-profiles"), ref("guide.md")])
    assert broken_doc_refs("x.py", ok, pages) == []
    bad = ref("guide.md", "no-such-heading") + " and " + ref("nothing.md")
    assert len(broken_doc_refs("x.py", bad, pages)) == 2
