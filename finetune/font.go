package finetune

import (
	"image"
	"image/color"
)

// glyphs is a 3x5 bitmap font with just the characters the loss curve
// needs: digits, a few letters, '.', '-' and space. Unknown characters are
// drawn as blanks.
var glyphs = map[rune][5]string{
	'0': {"111", "101", "101", "101", "111"},
	'1': {"010", "110", "010", "010", "111"},
	'2': {"111", "001", "111", "100", "111"},
	'3': {"111", "001", "111", "001", "111"},
	'4': {"101", "101", "111", "001", "001"},
	'5': {"111", "100", "111", "001", "111"},
	'6': {"111", "100", "111", "101", "111"},
	'7': {"111", "001", "001", "001", "001"},
	'8': {"111", "101", "111", "101", "111"},
	'9': {"111", "101", "111", "001", "111"},
	'.': {"000", "000", "000", "000", "010"},
	'-': {"000", "000", "111", "000", "000"},
	'a': {"000", "011", "101", "101", "011"},
	'd': {"001", "011", "101", "101", "011"},
	'e': {"000", "111", "111", "100", "011"},
	'i': {"010", "000", "010", "010", "010"},
	'l': {"010", "010", "010", "010", "010"},
	'n': {"000", "110", "101", "101", "101"},
	'o': {"000", "010", "101", "101", "010"},
	'p': {"000", "110", "101", "110", "100"},
	'r': {"000", "011", "100", "100", "100"},
	's': {"000", "011", "110", "001", "110"},
	't': {"010", "111", "010", "010", "001"},
	'v': {"000", "101", "101", "101", "010"},
}

// glyphAdvance is a character's width plus spacing, in pixels.
const glyphAdvance = 4 * glyphScale

func textWidth(s string) int { return len([]rune(s))*glyphAdvance - glyphScale }

// drawText draws s with its top-left corner at (x, y).
func drawText(img *image.RGBA, x, y int, s string, c color.RGBA) {
	for _, r := range s {
		if g, ok := glyphs[r]; ok {
			for row, bits := range g {
				for col, b := range bits {
					if b == '1' {
						fill(img, image.Rect(x+col*glyphScale, y+row*glyphScale, x+(col+1)*glyphScale, y+(row+1)*glyphScale), c)
					}
				}
			}
		}
		x += glyphAdvance
	}
}
