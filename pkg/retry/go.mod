module github.com/ordertrace/ordertrace/pkg/retry

go 1.26
