module github.com/ordertrace/ordertrace/deploy/healthcheck

go 1.26.0
