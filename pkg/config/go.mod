module github.com/ordertrace/ordertrace/pkg/config

go 1.26.0

require github.com/sethvargo/go-envconfig v1.4.3
