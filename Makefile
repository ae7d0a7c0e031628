# lookout: the two commands a new user runs are `make demo` and `make test`.
# Every target installs what it needs first (deploy/install-deps.sh is idempotent and quick when all is there).

CARGO ?= cargo
PYTHON ?= python3
# The timed benchmarks: AUTOGROUP_NICE=-19 gives their session's scheduler autogroup priority over other sessions'
# niced builds for the run (see BENCHMARKS.md, "Running benchmarks on this machine"); unset, nothing is changed.
AG = $(if $(AUTOGROUP_NICE),--autogroup-nice $(AUTOGROUP_NICE))
VENV ?= .venv
DEMO_MODEL ?= owlvit-base-patch32
DEMO_OUT ?= out/demo
export ORT_DYLIB_PATH ?= $(CURDIR)/.deps/onnxruntime/libonnxruntime.so

.PHONY: all deps build demo test lint fmt clippy export export-full bench-locate bench-gdino bench-watch bench-recording bench-http bench-verify clean

all: build

## deps: apt packages (GStreamer, mosquitto) and the ONNX Runtime library in .deps/
deps:
	bash deploy/install-deps.sh

## build: the release binary at target/release/lookout
build: deps
	$(CARGO) build --release --locked

## demo: run the main job on bundled real footage and photos; writes $(DEMO_OUT)/
demo: build
	bash deploy/demo.sh "$(DEMO_MODEL)" "$(DEMO_OUT)"

## test: install what is missing, build, run every test
test: deps
	$(CARGO) test --locked --all-targets
	$(CARGO) test --locked --doc

lint: deps
	$(CARGO) fmt --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

fmt:
	$(CARGO) fmt

# Development only: the Python environment that exports models and golden files (torch, transformers; ~3 GB).
$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -r models/requirements-export.txt

## export: regenerate the committed tiny models, tokenizers, fixtures and golden files
export: $(VENV)/bin/python
	$(VENV)/bin/python models/export_owl.py
	$(VENV)/bin/python models/export_gdino.py

## export-full: full-size random-weight OWL-ViT B/32 and OWLv2 B/16 in models/full/ (never committed; for benchmarks)
export-full: $(VENV)/bin/python
	$(VENV)/bin/python models/export_owl.py --full

## bench-locate: lookout vs the transformers pipeline vs plain onnxruntime, full-size OWL-ViT B/32
bench-locate: build $(VENV)/bin/python
	test -d models/full/owlvit-b32 || $(VENV)/bin/python models/export_owl.py --full --only owlvit
	$(VENV)/bin/python models/bench_locate.py --model models/full/owlvit-b32 --lookout target/release/lookout

## bench-gdino: the same for full-size Grounding DINO-T at 800x1333 (random weights; both layouts, 1 and 10 queries)
bench-gdino: build $(VENV)/bin/python
	test -f models/full/grounding-dino-t/export_info.json || $(VENV)/bin/python models/export_gdino.py --full --only grounding-dino
	$(VENV)/bin/python models/bench_gdino.py --model models/full/grounding-dino-t --lookout target/release/lookout

## bench-watch: watch end to end vs inference alone (interleaved rounds), decode-only 1/2/4 x 1080p, 1 vs 20 queries,
## RSS over a 10-min replay, live RTSP cameras kept at --fps 1 (PARTS=ratio,cameras,... to choose; under flock)
bench-watch: build $(VENV)/bin/python
	test -d models/full/owlvit-b32 || $(VENV)/bin/python models/export_owl.py --full --only owlvit
	$(VENV)/bin/python models/bench_watch.py --model models/full/owlvit-b32 --lookout target/release/lookout $(if $(PARTS),--parts $(PARTS)) $(AG)

## bench-recording: a 30-min event storm (every clip written and whole?) and 4 x 1080p CPU/RSS, against OLD=<a
## build of the per-event clip design> when given (tiny model; see models/bench_recording.py)
bench-recording: build
	python3 models/bench_recording.py --new target/release/lookout $(if $(OLD),--old $(OLD))

## bench-http: 50 clients on the event stream and latest.jpg for 60 s vs none: inference per frame, RSS (run under flock)
bench-http: build $(VENV)/bin/python
	test -d models/full/owlvit-b32 || $(VENV)/bin/python models/export_owl.py --full --only owlvit
	$(PYTHON) models/bench_http.py --model models/full/owlvit-b32 --lookout target/release/lookout $(AG)

## bench-verify: full-size X-CLIP B/32 (8 frames): ms per event, lookout vs the transformers pipeline; watch per frame
## with a query verified every 4 s vs without and vs inference alone (OWL-ViT B/32)
bench-verify: build $(VENV)/bin/python
	$(CARGO) build --release --example verify_timing
	test -f models/full/xclip-b32/export_info.json || $(VENV)/bin/python models/export_verifier.py --xclip --full --out models/full/xclip-b32
	test -d models/full/owlvit-b32 || $(VENV)/bin/python models/export_owl.py --full --only owlvit
	$(VENV)/bin/python models/bench_verify.py --xclip models/full/xclip-b32 --detector models/full/owlvit-b32 --lookout target/release/lookout $(AG)

clean:
	$(CARGO) clean
	rm -rf out
