// Package exercises holds the workshop's code exercises (docs/workshop), one
// package each, with their solutions behind the build tag "solution":
//
//	make exercise   runs their tests against your code (build tag "exercise")
//	make test       runs them against the solutions
package exercises
