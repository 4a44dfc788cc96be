module github.com/slicehub/slicehub/ops/lint

go 1.26.8

require github.com/nishanths/exhaustive v0.12.0

require (
	golang.org/x/mod v0.42.0 // indirect
	golang.org/x/sync v0.24.0 // indirect
	golang.org/x/tools v0.52.1-0.20261106145633-d407941a339a // indirect
)
