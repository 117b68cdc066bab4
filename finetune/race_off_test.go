//go:build !race

package finetune

const raceBuild = false
