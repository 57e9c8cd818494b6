"""Every webhook is an event in the PDKs: a typed payload and a handler under its
exact export name, in AssemblyScript, C and Rust.

``webhooks.yaml`` is small: bare payloads (as Lago sends them), an envelope, a
name with a dot, a Rust keyword, free JSON and a webhook without a body, next to
one lifecycle event. Its plug-ins are built and run under the harness.

Real documents (``tests/documents/*/openapi.*``, e.g. Lago's billing API) get
their PDK generated and compiled in the three languages with warnings as
errors, with a plug-in that handles one of their webhooks and calls an
operation. C and AssemblyScript plug-ins also run; for Rust the whole crate is
type-checked with ``cargo check`` and only the plug-in is built and run.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import wasmtime

from c_build import build, cc
from conftest import ROOT
from hostwire import PluginError, load_openapi
from hostwire._hostapi import Node, OpenAPIDocument, compile_schema
from hostwire._pdk.c import SOURCES
from hostwire._pdk.generate import render
from hostwire._pdk.model import build_model
from hostwire._pdk.rust import TARGET, snake_ident
from hostwire.testing import PluginHarness

WEBHOOKS = ROOT / "tests" / "pdk" / "webhooks.yaml"
DOCUMENTS = sorted(
    p
    for folder in sorted((ROOT / "tests" / "documents").iterdir())
    for p in folder.glob("openapi.*")
    if p.suffix in (".yaml", ".yml", ".json")
)
ASC = ROOT / "node_modules" / ".bin" / "asc"
CARGO = Path("/usr/bin/cargo")
# The release profile of test_pdk_rust.py (so serde is built once a session); the dev
# profile, without debug info, for real documents: an optimised build with LTO of
# Lago's crate takes about two minutes, an unoptimised one seconds.
CARGO_PROFILE = (
    '[profile.release]\nopt-level = "s"\nlto = true\nstrip = true\n\n[profile.dev]\ndebug = false\n'
)


# -- payloads made from a schema --------------------------------------------------

_FORMATS = {
    "date-time": "2026-01-01T00:00:00Z",
    "date": "2026-01-01",
    "time": "00:00:00Z",
    "uuid": "1a901a90-1a90-1a90-1a90-1a901a901a90",
    "email": "ann@example.com",
    "uri": "https://example.com/x",
    "url": "https://example.com/x",
}


def sample(spec: OpenAPIDocument, node: Node, depth: int = 0) -> Any:
    """A small value that ``node``'s schema accepts: required members only, the
    first enum value or type, the first branch of a oneOf or anyOf."""
    node = spec.deref(node)
    value = node.value
    if not isinstance(value, dict) or depth > 40:
        return None
    if "const" in value:
        return value["const"]
    if value.get("enum"):
        return next((v for v in value["enum"] if v is not None), None)
    for key in ("oneOf", "anyOf"):
        if value.get(key) and not value.get("properties"):
            options = [node.child(key, i) for i in range(len(value[key]))]
            real = [o for o in options if spec.deref(o).value.get("type") != "null"]
            return sample(spec, (real or options)[0], depth + 1)
    kind = value.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None and ("properties" in value or "allOf" in value):
        kind = "object"
    if kind == "object":
        out: dict[str, Any] = {}
        for index in range(len(value.get("allOf") or [])):
            part = sample(spec, node.child("allOf", index), depth + 1)
            if isinstance(part, dict):
                out.update(part)
        for name in value.get("required") or []:
            if name in (value.get("properties") or {}):
                out[name] = sample(spec, node.child("properties", name), depth + 1)
        return out
    if kind == "array":
        count = int(value.get("minItems", 0))
        return [sample(spec, node.child("items"), depth + 1) for _ in range(count)]
    if kind == "string":
        text = _FORMATS.get(str(value.get("format")), "x")
        return text * max(1, int(value.get("minLength", 1)) // len(text) + 1)
    if kind in ("integer", "number"):
        number = max(1, int(value.get("minimum", 1)))
        return number if kind == "integer" else float(number)
    if kind == "boolean":
        return False
    return None


def checked(spec: OpenAPIDocument, node: Node, value: Any, what: str) -> Any:
    problems = compile_schema(spec, node).problems(what, "", value)
    assert not problems, f"{what}: the sample does not match its schema: {problems[:3]}"
    return value


def webhook_payload(spec: OpenAPIDocument, name: str, **members: Any) -> dict[str, Any]:
    body = spec.webhooks[name].body
    assert body is not None
    value = {**sample(spec, body), **members}
    return dict(checked(spec, body, value, f"webhook {name}"))


def answer(spec: OpenAPIDocument, operation: str) -> Any:
    """A 2xx body the operation may answer."""
    op = spec.operation(operation)
    assert op is not None
    for status in sorted(op.node.value.get("responses") or {}):
        if str(status).startswith("2"):
            schema = spec.json_schema(spec.deref(op.node.child("responses", status)))
            if schema is not None:
                return checked(spec, schema, sample(spec, schema), operation)
    return None


# -- building ------------------------------------------------------------------


def asc(project: Path, *options: str) -> Path:
    """Build project/assembly/index.ts on project/pdk with asc; warnings fail."""
    if not ASC.exists():
        pytest.fail(f"{ASC} is missing: run `make plugins` (it installs the npm toolchain).")
    abort = "abort=pdk/plugin/abortPlugin"
    command = [str(ASC), "assembly/index.ts", *options, "--runtime", "incremental",
               "--use", abort, "--outFile", "build/plugin.wasm"]  # fmt: skip
    result = subprocess.run(
        command, cwd=project, capture_output=True, text=True, timeout=600, check=False
    )
    # AS235 only says that `export *` of classes exports nothing.
    errors = "\n".join(line for line in result.stderr.splitlines() if "AS235" not in line)
    assert result.returncode == 0, f"asc failed:\n{errors}"
    assert "WARNING" not in errors, f"asc warned:\n{errors}"
    return project / "build" / "plugin.wasm"


@functools.cache
def loaded(path: Path) -> OpenAPIDocument:
    """The document at ``path``, loaded once for the module (Lago's takes seconds)."""
    return load_openapi(path)


def write_pdk(spec: Path, lang: str, folder: Path) -> Path:
    """The PDK for ``spec`` in ``lang``, written to ``folder``, as `hostwire pdk generate` does."""
    for relative, text in render(loaded(spec), lang).items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_text(text, encoding="utf-8")
    return folder


def as_project(folder: Path, spec: Path, source: str) -> Path:
    if not (folder / "pdk").exists():
        write_pdk(spec, "assemblyscript", folder / "pdk")
    (folder / "assembly").mkdir(parents=True, exist_ok=True)
    (folder / "assembly" / "index.ts").write_text(source, encoding="utf-8")
    return folder


_CLASS = re.compile(r"^export class (\w+) \{\n(.*?)^\}", re.M | re.S)


def as_everything(pdk: Path) -> str:
    """An entry file that exports the whole PDK and makes asc compile every model
    (asc compiles only what is used): each one decoded and encoded."""
    names, lines = [], []
    for name, body in _CLASS.findall((pdk / "models.ts").read_text(encoding="utf-8")):
        names.append(name)
        if "private constructor" in body:  # an enum
            lines.append(f'  if ({name}.fromString("") !== null) n++;')
        elif "toJson()" in body:
            lines.append(f'  {{ const x = {name}.fromJson("{{}}");')
            lines.append("    if (x !== null) n += x.toJson().length; }")
    return "\n".join(
        [
            'export * from "../pdk/index";',
            *(f'import {{ {n} }} from "../pdk/index";' for n in names),
            "export function check(): i32 {",
            "  let n = 0;",
            *lines,
            "  return n;",
            "}",
            "",
        ]
    )


def rust_project(
    folder: Path, spec: Path, name: str, source: str, features: list[str] | None = None
) -> Path:
    """A plug-in crate on the PDK of ``spec``: with every feature (the PDK's default),
    or only ``features``."""
    write_pdk(spec, "rust", folder / "pdk")
    (folder / ".cargo").mkdir(parents=True, exist_ok=True)
    (folder / ".cargo" / "config.toml").write_text((ROOT / ".cargo" / "config.toml").read_text())
    chosen = (
        "" if features is None else f", default-features = false, features = {json.dumps(features)}"
    )
    (folder / "Cargo.toml").write_text(
        f'[package]\nname = "{name}"\nversion = "0.1.0"\nedition = "2021"\n\n'
        '[lib]\ncrate-type = ["cdylib"]\n\n'
        f'[dependencies]\nhostwire-pdk = {{ path = "pdk"{chosen} }}\n\n'
        + CARGO_PROFILE
        + "\n[workspace]\n"
    )
    (folder / "src").mkdir(exist_ok=True)
    (folder / "src" / "lib.rs").write_text(source)
    return folder


def cargo(folder: Path, env: dict[str, str], *args: str) -> None:
    command = [str(CARGO), *args, "--offline", "--target", TARGET]
    result = subprocess.run(
        command, cwd=folder, env=env, capture_output=True, text=True, timeout=900, check=False
    )
    assert result.returncode == 0, f"cargo {' '.join(args)} failed in {folder}:\n{result.stderr}"


def rust_wasm(env: dict[str, str], name: str, profile: str = "release") -> Path:
    return Path(env["CARGO_TARGET_DIR"]) / TARGET / profile / f"{name}.wasm"


# -- the model -------------------------------------------------------------------


def test_every_webhook_with_a_body_is_an_event_named_after_its_export() -> None:
    events = {e.export: e for e in build_model(load_openapi(WEBHOOKS)).events}
    assert list(events) == [
        "invoice_after_update",  # lifecycle events first, as before
        "customer_deleted",
        "feature_created",
        "invoice_created",
        "match",
    ]  # heartbeat has no body: nothing to handle
    lifecycle = events["invoice_after_update"]
    assert (lifecycle.model, lifecycle.lifecycle, lifecycle.before) == ("invoice", True, False)
    assert lifecycle.payload.model == "InvoiceEvent"
    created = events["invoice_created"]
    assert (created.type, created.model, created.lifecycle) == ("invoice_created", "", False)
    assert (created.enveloped, created.before, created.result) == (False, False, None)
    assert created.payload.model == "InvoiceCreatedEvent"  # an inline body: named after its export
    assert events["feature_created"].type == "feature.created"
    assert events["feature_created"].payload.model == "FeatureWebhook"  # a component keeps its name
    assert events["customer_deleted"].enveloped
    assert events["customer_deleted"].payload.model == "CustomerDeletedEvent"
    assert events["match"].payload.kind == "any"


def test_an_inline_payload_name_that_is_taken_is_numbered(tmp_path: Path) -> None:
    taken = "    InvoiceCreatedEvent: {properties: {x: {type: string}}}\n"
    document = WEBHOOKS.read_text(encoding="utf-8").replace(
        "    WebhookBase:", taken + "    WebhookBase:"
    )
    (tmp_path / "taken.yaml").write_text(document, encoding="utf-8")
    events = {e.export: e for e in build_model(load_openapi(tmp_path / "taken.yaml")).events}
    assert events["invoice_created"].payload.model == "InvoiceCreatedEvent2"


# -- webhooks.yaml, built and run --------------------------------------------------

INVOICE = {"lago_id": "inv-1", "number": "F-001", "status": "finalized", "total_amount_cents": 990}

C_PLUGIN = r"""
#include "hostwire.h"

static int lookup(hw_str id) {
    api_get_invoice_response answer = api_get_invoice(id);
    if (!answer.ok) return hw_fail("get_invoice: %S", answer.error.message);
    hw_log_info("found %S", answer.body->number);
    return 0;
}

static int on_invoice(const InvoiceCreatedEvent *event) { return lookup(event->invoice->lago_id); }
HW_ON_INVOICE_CREATED(on_invoice)

static int on_feature(const FeatureWebhook *event) { return lookup(event->feature->code); }
HW_ON_FEATURE_CREATED(on_feature)

static int on_customer(const CustomerDeletedEvent *event) {
    return lookup(event->data->customer_id);
}
HW_ON_CUSTOMER_DELETED(on_customer)

static int on_match(const hw_json *event) {
    const hw_json *id = hw_json_get(event, "id");
    if (id == NULL || id->kind != HW_JSON_STRING) return hw_fail("match: no id");
    return lookup(id->string);
}
HW_ON_MATCH(on_match)
"""

AS_PLUGIN = """
import {
  CustomerDeletedEvent, FeatureWebhook, InvoiceCreatedEvent, JsonValue, fail, getInvoice,
  logInfo, onCustomerDeleted, onFeatureCreated, onInvoiceCreated, onMatch,
} from "../pdk/index";

function lookup(id: string): void {
  const answer = getInvoice(id);
  const body = answer.body;
  if (body === null) { fail("get_invoice failed"); return; }
  logInfo("found " + body.number);
}

export function invoice_created(): i32 { return onInvoiceCreated(onInvoice); }
function onInvoice(event: InvoiceCreatedEvent): void { lookup(event.invoice.lagoId); }

export function feature_created(): i32 { return onFeatureCreated(onFeature); }
function onFeature(event: FeatureWebhook): void { lookup(event.feature.code); }

export function customer_deleted(): i32 { return onCustomerDeleted(onCustomer); }
function onCustomer(event: CustomerDeletedEvent): void { lookup(event.data.customerId); }

export function match(): i32 { return onMatch(onMatchEvent); }
function onMatchEvent(event: JsonValue): void {
  const id = event.get("id");
  if (id === null || !id.isString) { fail("match: no id"); return; }
  lookup(id.asString());
}
"""

RUST_PLUGIN = r"""
use hostwire_pdk::*;

fn lookup(id: &str) -> Result<(), Error> {
    let found = api::get_invoice(id).into_result()?;
    log::info(format!("found {}", found.number));
    Ok(())
}

invoice_created!(|event| lookup(&event.invoice.lago_id));
feature_created!(|event| lookup(&event.feature.code));
customer_deleted!(|event| lookup(&event.data.customer_id));
match_!(|event| lookup(event["id"].as_str().ok_or("match: no id")?));
"""


LANGS = ["assemblyscript", "c", "rust"]


@pytest.fixture(scope="module", params=LANGS)
def webhooks_wasm(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The webhooks.yaml plug-in, built in each language."""
    lang = str(request.param)
    folder = tmp_path_factory.mktemp(f"webhooks-{lang}")
    if lang == "c":
        write_pdk(WEBHOOKS, "c", folder / "pdk")
        return build(folder / "pdk", C_PLUGIN, folder / "plugin.wasm")
    if lang == "assemblyscript":
        return asc(as_project(folder, WEBHOOKS, AS_PLUGIN), "-O3")
    env: dict[str, str] = request.getfixturevalue("cargo_env")  # only when Rust runs
    cargo(rust_project(folder, WEBHOOKS, "webhooks", RUST_PLUGIN), env, "build", "--release")
    return rust_wasm(env, "webhooks")


def test_each_webhook_reaches_its_handler_typed_bare_or_enveloped(webhooks_wasm: Path) -> None:
    spec = loaded(WEBHOOKS)
    with PluginHarness(webhooks_wasm, spec=WEBHOOKS) as harness:
        harness.mock("getInvoice", INVOICE)
        bare = webhook_payload(
            spec, "invoice_created", webhook_type="invoice.created", invoice=INVOICE
        )
        assert harness.call("invoice_created", bare) is None
        feature = webhook_payload(spec, "feature.created", feature={"code": "seats"})
        assert harness.call("feature_created", feature) is None
        envelope = {
            "id": "evt_1",
            "type": "customer.deleted",
            "timestamp": "2026-01-01T00:00:00Z",
            "data": {"customer_id": "cus-9", "reason": None},
        }
        assert harness.call("customer_deleted", envelope) is None
        assert harness.call("match", {"id": "m-3", "anything": [1, None]}) is None
        assert [c.path for c in harness.calls] == [
            "/invoices/inv-1",
            "/invoices/seats",
            "/invoices/cus-9",
            "/invoices/m-3",
        ]
        exports = set(harness.plugin.exports)
    assert {"invoice_created", "feature_created", "customer_deleted", "match"} <= exports
    assert "invoice_after_update" not in exports  # only what the plug-in handles


def test_a_payload_that_is_not_the_declared_one_fails_the_call(webhooks_wasm: Path) -> None:
    with PluginHarness(webhooks_wasm, spec=WEBHOOKS) as harness:
        with pytest.raises(PluginError, match="invoice_created"):
            harness.call("invoice_created", {"webhook_type": "invoice.created"})
        with pytest.raises(PluginError, match="match: no id"):
            harness.call("match", [1, 2])
        assert harness.calls == []


@pytest.mark.parametrize("lang", LANGS)
def test_generated_docs_say_what_a_handler_receives(lang: str) -> None:
    from hostwire._pdk.generate import render

    files = render(loaded(WEBHOOKS), lang)
    readme = next(text for path, text in files.items() if path.endswith("README.md"))
    webhooks = readme.split("## Webhooks", 1)[1]
    rows = {line.split("|")[1].strip(): line for line in webhooks.splitlines() if "|" in line}
    bare, envelope = "bare", "envelope"
    assert any("feature.created" in r and bare in r for r in rows.values())
    assert any("customer.deleted" in r and envelope in r for r in rows.values())
    assert any("invoice_created" in r and bare in r for r in rows.values())


# -- real documents --------------------------------------------------------------------


def _ids(paths: list[Path]) -> list[str]:
    return [p.parent.name for p in paths]


# A plug-in per document, in each language: it handles one webhook with its typed
# payload and calls one operation with a member of it. The test sends the webhook
# a payload made from its schema (members given here, the member set to an id) and
# expects one call to the operation's path with that id.
REAL_PLUGINS: dict[str, dict[str, Any]] = {
    "lago": {
        "webhook": "invoice_created",
        "payload": {"webhook_type": "invoice.created", "object_type": "invoice"},
        "member": ("invoice", "lago_id"),
        "id": "1a901a90-1a90-1a90-1a90-1a901a901a90",  # Lago's ids are UUIDs
        "operation": "findInvoice",
        "path": "/invoices/{}",
        "features": ["invoice_created", "find_invoice"],  # the Rust PDK's, for what it uses
        "c": r"""
#include "hostwire.h"

static int on_invoice(const InvoiceCreatedEvent *event) {
    api_find_invoice_response answer = api_find_invoice(event->invoice->lago_id);
    if (!answer.ok) return hw_fail("find_invoice: %S", answer.error.message);
    hw_log_info("invoice %S is %s", answer.body->invoice->number,
                InvoiceObjectExtendedStatus_to_string(answer.body->invoice->status));
    return 0;
}
HW_ON_INVOICE_CREATED(on_invoice)
""",
        "assemblyscript": """
import { InvoiceCreatedEvent, fail, findInvoice, logInfo, onInvoiceCreated } from "../pdk/index";

export function invoice_created(): i32 { return onInvoiceCreated(onInvoice); }

function onInvoice(event: InvoiceCreatedEvent): void {
  const answer = findInvoice(event.invoice.lagoId);
  const body = answer.body;
  if (body === null) { fail("find_invoice failed"); return; }
  logInfo("invoice " + body.invoice.number + " is " + body.invoice.status.toString());
}
""",
        "rust": r"""
use hostwire_pdk::*;

invoice_created!(|event: InvoiceCreatedEvent| {
    let found = api::find_invoice(&event.invoice.lago_id).into_result()?;
    log::info(format!("invoice {} is {}", found.invoice.number, found.invoice.status));
    Ok(())
});
""",
    },
}


_SCAFFOLD_SOURCE = {"assemblyscript": "assembly/index.ts", "c": "main.c", "rust": "src/lib.rs"}


def plugin_source(document: Path, lang: str) -> str:
    """The document's plug-in in ``lang``: ours from REAL_PLUGINS, or for a document
    that has none there, the one `hostwire plugin new` makes (it handles an event and
    calls an operation that needs no arguments, if there is one); that one is only built."""
    plugin = REAL_PLUGINS.get(document.parent.name)
    if plugin is not None:
        return str(plugin[lang])
    return render(loaded(document), lang, scaffold="real_plugin")[_SCAFFOLD_SOURCE[lang]]


def rust_features(document: Path) -> list[str]:
    """The Rust PDK features the document's plug-in uses (a scaffold's, from its Cargo.toml)."""
    plugin = REAL_PLUGINS.get(document.parent.name)
    if plugin is not None:
        return list(plugin["features"])
    manifest = tomllib.loads(render(loaded(document), "rust", scaffold="real_plugin")["Cargo.toml"])
    return list(manifest["dependencies"]["hostwire-pdk"]["features"])


def run_real_plugin(document: Path, wasm: Path) -> None:
    """Send the plug-in its webhook; it calls the operation with the payload's member."""
    plugin = REAL_PLUGINS.get(document.parent.name)
    if plugin is None:
        return  # a scaffolded plug-in: built, not run
    spec = loaded(document)
    outer, member = plugin["member"]
    payload = webhook_payload(spec, plugin["webhook"], **plugin["payload"])
    payload[outer][member] = plugin["id"]
    export = spec.webhooks[plugin["webhook"]].export
    with PluginHarness(wasm, spec=document) as harness:
        harness.mock(plugin["operation"], answer(spec, plugin["operation"]))
        assert harness.call(export, payload) is None
        assert [c.path for c in harness.calls] == [plugin["path"].format(plugin["id"])]
        assert export in harness.plugin.exports


@pytest.mark.parametrize("document", DOCUMENTS, ids=_ids(DOCUMENTS))
def test_a_real_documents_c_pdk_compiles_strictly_and_its_plugin_runs(
    document: Path, tmp_path: Path
) -> None:
    pdk = write_pdk(document, "c", tmp_path / "pdk")
    objects = [str(tmp_path / f"{source}.o") for source in SOURCES]
    for source, obj in zip(SOURCES, objects, strict=True):  # every one, used or not
        cc(f"-I{pdk}", "-c", str(pdk / source), "-o", obj)
    main = tmp_path / "main.c"
    main.write_text(plugin_source(document, "c"), encoding="utf-8")
    cc(f"-I{pdk}", "-o", str(tmp_path / "plugin.wasm"), str(main), *objects)
    run_real_plugin(document, tmp_path / "plugin.wasm")


@pytest.mark.parametrize("document", DOCUMENTS, ids=_ids(DOCUMENTS))
def test_a_real_documents_assemblyscript_pdk_compiles_and_its_plugin_runs(
    document: Path, tmp_path: Path
) -> None:
    whole = tmp_path / "whole"
    pdk = write_pdk(document, "assemblyscript", whole / "pdk")
    # asc compiles only what is used: this uses every model (unoptimised: it only checks).
    asc(as_project(whole, document, as_everything(pdk)))
    plugin = tmp_path / "plugin"
    shutil.copytree(pdk, plugin / "pdk")
    wasm = asc(as_project(plugin, document, plugin_source(document, "assemblyscript")))
    run_real_plugin(document, wasm)


@pytest.mark.parametrize("document", DOCUMENTS, ids=_ids(DOCUMENTS))
def test_a_real_documents_rust_pdk_builds_and_its_plugin_runs(
    document: Path, tmp_path: Path, cargo_env: dict[str, str]
) -> None:
    features = rust_features(document)
    project = rust_project(
        tmp_path, document, "real_plugin", plugin_source(document, "rust"), features
    )
    # The whole crate, every feature on, type-checks without a warning...
    cargo(project, cargo_env, "check", "--features", "hostwire-pdk/all")
    # ...and the plug-in builds on only the features it names, every other
    # operation, event and model left out.
    cargo(project, cargo_env, "build")
    wasm = rust_wasm(cargo_env, "real_plugin", profile="debug")
    run_real_plugin(document, wasm)
    module = wasmtime.Module(wasmtime.Engine(), wasm.read_bytes())
    imports = {i.name for i in module.imports if i.module == "extism:host/user"}
    by_feature = {snake_ident(op.name): op.name for op in build_model(loaded(document)).operations}
    assert imports == {by_feature[f] for f in features if f in by_feature}


def test_real_documents_are_found() -> None:
    assert "lago" in _ids(DOCUMENTS)
