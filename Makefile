# The two commands: `make run` (local stack) and `make test` (every test). Both set themselves up.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: build run test typecheck bench package clean
.DEFAULT_GOAL := build

$(STAMP): requirements.txt requirements-dev.txt kube-agent/requirements.txt kube-agent/requirements-local.txt kube-agent/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements-dev.txt
# selenium 4.40 brought stubs for urllib3 1.26, which would hide urllib3 2's own types from mypy.
	$(PY) -m pip uninstall -qq --yes types-urllib3 types-certifi
	touch $(STAMP)

# The dashboard's packages, from its lockfile only (`npm ci`); nothing downloads browsers (Debian's chromium is used).
DASHBOARD_STAMP := dashboard/node_modules/.installed
VITE := node node_modules/vite/bin/vite.js

DASHBOARD_BUILD := dashboard/dist/index.html
DASHBOARD_SOURCES := $(shell find dashboard/src dashboard/public -type f 2>/dev/null) dashboard/index.html \
	dashboard/vite.config.ts dashboard/security-headers.ts

$(DASHBOARD_STAMP): dashboard/package-lock.json
	cd dashboard && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund
	touch $@

# The bundle `make run` serves, calling the local API (http://localhost:8000: the same site as the dashboard).
$(DASHBOARD_BUILD): $(DASHBOARD_STAMP) $(DASHBOARD_SOURCES)
	cd dashboard && $(VITE) build

# `make` (or `make build`): set up (the virtualenv, the dashboard's packages) and build the dashboard.
build: $(STAMP) $(DASHBOARD_BUILD)

run: $(STAMP) $(DASHBOARD_BUILD)
	$(PY) -m devstack.run

# Python: lint, import contracts, types, tests. The dashboard: its API types against the API's document, types,
# lint, unit tests; then its end-to-end tests in Chromium against the local stack of `make run`.
test: $(STAMP) $(DASHBOARD_BUILD)
	$(VENV)/bin/ruff check app.py chalicelib devstack infra bench tests kube-agent
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy
	cd dashboard && OROCHI_PYTHON=$(abspath $(PY)) npm run --silent check:api && npm run --silent typecheck \
		&& npm run --silent lint && npm test --silent
	$(PY) -m pytest -n 3 --dist loadfile
	$(PY) -m devstack.with_stack --cwd dashboard -- node node_modules/@playwright/test/cli.js test

# mypy --strict over the files listed in pyproject.toml's [tool.mypy]; its cache is .mypy_cache.
typecheck: $(STAMP)
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) -m bench.run_all

# `make package`: the prod stage as a SAM/CloudFormation template (build/sam.json) plus deployment.zip,
# merged with infra/resources.json (table, job queues, log groups, least-privilege roles).
# `chalice package` imports app.py, which validates the settings at import, with the stage's
# environment applied. The prod secrets (Secrets Manager references) and the queue URL template are
# set in infra/resources.json, since only CloudFormation resolves them, so that import gets
# placeholders here; chalice never writes them into the template.
# AWS_DEFAULT_REGION only picks the partition's service principals (lambda.amazonaws.com).
PACKAGE_DIR ?= build
PACKAGE_ENV := AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-us-east-1} \
	JWT_SECRET=package-time-placeholder-never-deployed-0000 \
	ENCRYPTION_KEY=pkg:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= \
	JOB_QUEUE_URL_TEMPLATE='https://sqs.invalid/000000000000/orochi-jobs-{region}.fifo'

# The dashboard's static bundle goes to $(PACKAGE_DIR)/dashboard, built to call DASHBOARD_API_URL, and its hosting (a
# private bucket behind CloudFront with the dashboard's security headers, and the API on DASHBOARD_API_URL's host)
# into the template (infra/dashboard_site.py).
DASHBOARD_API_URL ?= https://api.orochi.example

package: $(STAMP) $(DASHBOARD_STAMP)
	rm -rf $(PACKAGE_DIR)
	$(PACKAGE_ENV) $(VENV)/bin/chalice package --stage prod --merge-template infra/resources.json $(PACKAGE_DIR)
	$(PY) infra/bytecompile.py $(PACKAGE_DIR)/deployment.zip
	cd dashboard && VITE_API_URL=$(DASHBOARD_API_URL) node scripts/security-headers.mjs \
		> $(abspath $(PACKAGE_DIR))/dashboard-security-headers.json
	$(PY) -m infra.dashboard_site $(PACKAGE_DIR)/sam.json $(PACKAGE_DIR)/dashboard-security-headers.json \
		--api-url $(DASHBOARD_API_URL)
	cd dashboard && VITE_API_URL=$(DASHBOARD_API_URL) $(VITE) build --outDir $(abspath $(PACKAGE_DIR))/dashboard --emptyOutDir

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache build
