# The two commands a new machine needs (both install what they use first):
#   make demo   a mirrored LUN surviving a failed leg, inside LIO (in a VM here)
#   make test   every test: engine, handler harness, CLI, the package, and the
#               real-kernel suite (whose guest installs hamirror from the package)
# Debian: make deb, then apt install ./target/debian/hamirror_*_amd64.deb (pulls in tcmu-runner).
# Elsewhere: make install (scripts/install.sh copies the handler and CLI).
.PHONY: setup build test test-host test-deb test-vm deb demo bench install uninstall clean

setup:
	bash scripts/setup-host.sh
	bash scripts/setup-rust.sh

build: setup
	cargo build --release --workspace

test-host: build
	cargo test --release --workspace
	bash scripts/lib/test-apt-mirror.sh

# target/debian/hamirror_<version>-1_amd64.deb (dpkg-deb; packaging/deb/)
deb: build
	bash scripts/package-deb.sh

# The package's contents and maintainer scripts, checked on the host (seconds).
test-deb: deb
	bash scripts/check-deb.sh

# The guest installs the package built by `deb` with dpkg -i.
test-vm: deb
	bash tests/vm/e2e.sh

test: test-host test-deb test-vm

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
