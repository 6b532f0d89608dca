"""The docs keep up with the CLI and the code: every `callmood` subcommand has help and is
in README.md and a docs/ page, every option is documented, every docs/ page is linked
from README.md, every link and every code path the docs name exists, and the package
picture in docs/architecture.md is the code's."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
from test_layout import ALLOWED, FOLDERS, imported_packages

from callmood.cli import main

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
ARCHITECTURE = DOCS / "architecture.md"
PAGES = sorted(DOCS.glob("**/*.md"))
DOCUMENTS = [README, *PAGES]
COMMANDS = sorted(main.commands)
README_MAX_LINES = 250
# top-level entries of the repository; a backticked name that starts with one is a path
REPO_ROOTS = ("callmood/", "batch/", "live/", "dashboard/", "training/", "benchmarks/",
              "tests/", "sample_calls/", "docs/", ".ci/")
FILE_SUFFIXES = (".json", ".md", ".py", ".csv", ".png", ".sql", ".parquet", ".safetensors",
                 ".db", ".txt", ".wav")


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def all_text() -> str:
    return "\n".join(read(p) for p in DOCUMENTS)


def prose(text: str) -> str:
    """The text outside fenced code blocks."""
    return re.sub(r"^```.*?^```[ \t]*$", "", text, flags=re.M | re.S)


def fenced_blocks(text: str, info: str) -> list[str]:
    return re.findall(rf"^```{info}[ \t]*\n(.*?)^```", text, flags=re.M | re.S)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found, seen = set(), {}
    for line in prose(read(path)).splitlines():
        m = re.match(r"#{1,6}\s+(.*)", line)
        if m:
            base = slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
    return found


def links(path: Path) -> list[str]:
    return re.findall(r"!?\[[^\]]*\]\(([^)\s]+)\)", prose(read(path)))


def expand_braces(pattern: str) -> list[str]:
    m = re.search(r"\{([^{}]*)\}", pattern)
    if not m:
        return [pattern]
    return [x for choice in m.group(1).split(",")
            for x in expand_braces(pattern[:m.start()] + choice + pattern[m.end():])]


def inline_code(path: Path) -> list[str]:
    return re.findall(r"`([^`\n]+)`", prose(read(path)))


# --- the command line --------------------------------------------------------------------


def test_there_are_subcommands():
    assert {"train", "evaluate", "tune", "predict"} <= set(COMMANDS)


@pytest.mark.parametrize("name", COMMANDS)
def test_subcommand_has_help_text(name):
    command = main.commands[name]
    assert command.help and command.help.strip(), f"`callmood {name}` has no help text"


@pytest.mark.parametrize("name", COMMANDS)
def test_subcommand_is_in_readme(name):
    assert README.is_file(), f"{README} is missing"
    assert f"callmood {name}" in read(README), f"README.md never mentions `callmood {name}`"


@pytest.mark.parametrize("name", COMMANDS)
def test_subcommand_is_documented_in_docs(name):
    pages = [rel(p) for p in PAGES if f"callmood {name}" in read(p)]
    assert pages, f"no page in docs/ mentions `callmood {name}`"


@pytest.mark.parametrize("name", COMMANDS)
def test_every_option_is_documented(name):
    text = all_text()
    missing = []
    for param in main.commands[name].params:
        if not isinstance(param, click.Option):
            continue
        names = [o for o in [*param.opts, *param.secondary_opts] if o.startswith("--")]
        if names and not any(re.search(re.escape(o) + r"(?![\w-])", text) for o in names):
            missing.append("/".join(names))
    assert not missing, (f"`callmood {name}` options named nowhere in README.md or docs/: "
                         f"{', '.join(missing)}")


def test_make_targets_named_in_the_docs_exist():
    makefile = read(ROOT / "Makefile")
    targets = set(re.findall(r"^([A-Za-z][\w-]*)\s*:(?!=)", makefile, flags=re.M))
    assert {"demo", "test"} <= targets
    named = set()
    for path in DOCUMENTS:
        named |= set(re.findall(r"(?:^|`)make ([a-z][\w-]*)", read(path), flags=re.M))
    assert {"demo", "test"} <= named, "README.md must give `make demo` and `make test`"
    assert not named - targets, f"make targets the docs name but the Makefile lacks: " \
                                f"{sorted(named - targets)}"


def test_readme_gives_the_two_commands_exactly():
    block = "\n".join(fenced_blocks(read(README), "sh"))
    assert re.search(r"^make demo\b", block, flags=re.M)
    assert re.search(r"^make test\b", block, flags=re.M)


# --- the pages and their links -----------------------------------------------------------


def test_readme_is_short():
    lines = len(read(README).splitlines())
    assert lines <= README_MAX_LINES, \
        f"README.md has {lines} lines; move detail to a page in docs/ (at most {README_MAX_LINES})"


def test_there_are_docs_pages():
    assert {"architecture.md", "nightly-job.md", "results.md", "analytics.md", "live.md",
            "training.md", "benchmarks.md", "default-model.md"} <= {p.name for p in PAGES}


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_every_docs_page_is_linked_from_the_readme(page):
    targets = {(README.parent / link.split("#")[0]).resolve() for link in links(README)
               if not link.startswith(("http:", "https:", "#"))}
    assert page.resolve() in targets, f"README.md does not link {rel(page)}"


@pytest.mark.parametrize("path", DOCUMENTS, ids=rel)
def test_relative_links_resolve(path):
    broken = []
    for link in links(path):
        if link.startswith(("http:", "https:", "mailto:")):
            continue
        target, _, anchor = link.partition("#")
        file = (path.parent / target).resolve() if target else path
        if not file.exists():
            broken.append(f"{link} (no such file)")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{link} (no heading with that anchor in {file.name})")
    assert not broken, f"{rel(path)}: broken links: {broken}"


@pytest.mark.parametrize("path", DOCUMENTS, ids=rel)
def test_code_paths_named_exist(path):
    missing = []
    for code in inline_code(path):
        if not code.startswith(REPO_ROOTS) or "<" in code or " " in code:
            continue
        for candidate in expand_braces(code):
            candidate = candidate.rstrip("/")
            if "*" in candidate or "?" in candidate:
                if not any(ROOT.glob(candidate)):
                    missing.append(code)
            elif not (ROOT / candidate).exists():
                missing.append(code)
    assert not missing, f"{rel(path)} names paths that do not exist: {sorted(set(missing))}"


def module_file(parts: list[str]) -> tuple[Path | None, list[str]]:
    """The module file a dotted name starts with, and the names left after it."""
    if parts[0] == "callmood" and len(parts) > 1 and parts[1] in ("batch", "live",
                                                                   "dashboard", "training"):
        parts = parts[1:]
    base = ROOT
    for i, part in enumerate(parts):
        if (base / part / "__init__.py").exists():
            base = base / part
        elif (base / f"{part}.py").exists():
            return base / f"{part}.py", parts[i + 1:]
        else:
            return (base / "__init__.py" if i else None), parts[i:]
    return base / "__init__.py", []


@pytest.mark.parametrize("path", DOCUMENTS, ids=rel)
def test_dotted_module_names_exist(path):
    missing = []
    for code in inline_code(path):
        code = code.split("(")[0]
        if not re.fullmatch(r"(callmood|batch|live|dashboard|training)(\.\w+)+", code) \
                or code.endswith(FILE_SUFFIXES):
            continue
        file, rest = module_file(code.split("."))
        defined = rest and re.search(
            rf"^\s*(def|class)\s+{rest[0]}\b|^{rest[0]}\s*[:=]|[\"']{rest[0]}[\"']",
            read(file), flags=re.M) if file else None
        if file is None or len(rest) > 1 or rest and not defined:
            missing.append(code)
    assert not missing, f"{rel(path)} names modules or names that do not exist: {missing}"


def test_every_benchmark_script_is_documented():
    text = all_text()
    missing = [rel(p) for p in sorted((ROOT / "benchmarks").glob("*.py"))
               if rel(p) not in text]
    assert not missing, f"benchmark scripts no page names: {missing}"


# --- the package picture is the code's ----------------------------------------------------


def architecture_table() -> dict[str, tuple[str, set[str], set[str]]]:
    rows = {}
    for line in read(ARCHITECTURE).splitlines():
        m = re.fullmatch(r"\| (\w+) \| `([\w/]+?)/?` \| ([\w ,]+) \| ([\w ,]+) \|", line.strip())
        if m:
            def names(cell: str) -> set[str]:
                return set() if cell.strip() == "nothing" else \
                    {x.strip() for x in cell.split(",")}
            rows[m.group(1)] = (m.group(2), names(m.group(3)), names(m.group(4)))
    return rows


def test_architecture_table_is_the_layout_rules():
    table = architecture_table()
    assert set(table) == set(FOLDERS), "docs/architecture.md's table lists other packages " \
                                       "than tests/test_layout.py"
    for package, (folder, allowed, _) in table.items():
        assert folder == FOLDERS[package], f"{package}: folder {folder} in the docs, " \
                                           f"{FOLDERS[package]} in the rules"
        assert allowed == ALLOWED[package], \
            f"{package} may import {sorted(ALLOWED[package])} by tests/test_layout.py, " \
            f"the docs say {sorted(allowed)}"


def test_architecture_table_is_what_the_code_imports():
    wrong = []
    for package, (folder, _, imports) in architecture_table().items():
        actual = set()
        for path in (ROOT / folder).rglob("*.py"):
            actual |= imported_packages(path)
        actual.discard(package)
        if actual != imports:
            wrong.append(f"{package} imports {sorted(actual) or 'nothing'}, "
                         f"docs/architecture.md says {sorted(imports) or 'nothing'}")
    assert not wrong, "\n".join(wrong)


def tree_paths(block: str) -> set[str]:
    """Paths a text tree (├── / └── / │ indentation, 4 characters a level) names."""
    paths, stack = set(), []
    for line in block.splitlines():
        m = re.match(r"((?:│   |    )*)([├└]── )?(\S+)", line)
        if not m or not m.group(3):
            continue
        depth = len(m.group(1)) // 4 + (1 if m.group(2) else 0)
        name = m.group(3)
        del stack[depth:]
        paths.add("".join(stack) + name)
        if name.endswith("/"):
            stack.append(name)
    return paths


def test_tree_parser():
    block = "a/\n├── b/\n│   ├── c.py   text\n│   └── d/\n│       └── e.py\n└── f.py\ng/\n"
    assert tree_paths(block) == {"a/", "a/b/", "a/b/c.py", "a/b/d/", "a/b/d/e.py", "a/f.py",
                                 "g/"}


def test_architecture_tree_names_every_module_and_only_real_ones():
    blocks = fenced_blocks(read(ARCHITECTURE), "tree")
    assert len(blocks) == 1, "docs/architecture.md should hold one ```tree block"
    named = {p for p in tree_paths(blocks[0]) if p.endswith(".py")}
    modules = {rel(p) for folder in FOLDERS.values() for p in (ROOT / folder).rglob("*.py")
               if p.name != "__init__.py"}
    assert not modules - named, f"modules missing from docs/architecture.md's tree: " \
                                f"{sorted(modules - named)}"
    assert not named - modules, f"docs/architecture.md's tree names modules that do not " \
                                f"exist: {sorted(named - modules)}"


def test_pages_cover_every_subcommand_once_together():
    # each subcommand appears in the README's commands table with a link to a page
    table = [line for line in read(README).splitlines() if line.startswith("| `callmood ")]
    named = {line.split("`")[1].split()[1] for line in table}
    assert named == set(COMMANDS), "README.md's commands table is not the CLI's subcommands"
    assert all("](docs/" in line for line in table), "each command row links a docs/ page"

