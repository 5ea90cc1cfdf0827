# `make build` leaves one Lambda zip per function in target/lambda/<name>/bootstrap.zip (the
# template's CodeUri), then `sam deploy --guided` (or `sam deploy --config-env staging`) uploads them.
.PHONY: build lint

build:
	bash infra/package.sh $(FUNCTIONS)

lint:
	cfn-lint infra/template.yaml
