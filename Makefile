# The two commands a new machine needs (both install what they use first):
#   make demo   a mirrored LUN surviving a failed leg, inside LIO (in a VM here)
#   make test   every test: engine, handler harness, CLI, and the real-kernel suite
.PHONY: setup build test test-host test-vm demo bench install uninstall clean

setup:
	bash scripts/setup-host.sh
	bash scripts/setup-rust.sh

build: setup
	cargo build --release --workspace

test-host: build
	cargo test --release --workspace

test-vm: build
	bash tests/vm/e2e.sh

test: test-host test-vm

demo: build
	bash scripts/demo.sh

install: build
	bash scripts/install.sh

uninstall:
	bash scripts/install.sh --uninstall

bench: build
	cargo bench -p hamirror-mirror --bench engine

clean:
	cargo clean
