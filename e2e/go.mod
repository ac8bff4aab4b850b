module github.com/ordertrace/ordertrace/e2e

go 1.26.0
