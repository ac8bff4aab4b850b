module github.com/ordertrace/ordertrace/pkg/catalogcache

go 1.26
