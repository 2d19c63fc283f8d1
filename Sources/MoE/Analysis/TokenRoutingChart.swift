// TokenRoutingChart: the routing of one text as an SVG grid, token × MoE layer.
//
// Each column is a token (its text on top), each row an MoE layer; a cell is
// coloured by the token's top-1 expert in that layer and printed with its number,
// and the colour is paler the smaller that expert's weight (white at 0, full at
// 1), so a confident routing stands out from a hesitant one. Long texts wrap
// into bands of `tokensPerBand` columns. `gpt-moe route --svg` writes it;
// Notebooks/part6-specialization.md, §2 shows one.
//
// Legend: N tokens, L MoE layers, E experts.
import Foundation

/// A token × layer grid of top-1 experts, weights as colour strength.
public struct TokenRoutingChart {
    public var title: String
    public var routing: TokenRouting
    public var tokensPerBand = 32
    public var cellSize = 30.0

    public init(title: String, routing: TokenRouting) {
        self.title = title
        self.routing = routing
    }

    /// A colour per expert: Okabe–Ito's eight for E ≤ 8, evenly spaced hues beyond.
    static func colour(expert e: Int, of experts: Int) -> Colour {
        let okabeIto = [(0.0, 0.447, 0.698), (0.835, 0.369, 0.0), (0.0, 0.620, 0.451), (0.800, 0.475, 0.655),
                        (0.902, 0.624, 0.0), (0.337, 0.706, 0.914), (0.941, 0.894, 0.259), (0.3, 0.3, 0.3)]
        if experts <= okabeIto.count {
            let c = okabeIto[e % okabeIto.count]
            return Colour(c.0, c.1, c.2)
        }
        // Hue around the circle at fixed saturation and value (HSV → RGB).
        let h = Double(e) / Double(experts) * 6, f = h - h.rounded(.down)
        let (v, s) = (0.85, 0.65), p = v * (1 - s), q = v * (1 - s * f), t = v * (1 - s * (1 - f))
        switch Int(h) % 6 {
        case 0: return Colour(v, t, p)
        case 1: return Colour(q, v, p)
        case 2: return Colour(p, v, t)
        case 3: return Colour(p, q, v)
        case 4: return Colour(t, p, v)
        default: return Colour(v, p, q)
        }
    }

    /// The token as a cell label: whitespace made visible, long tokens cut.
    public static func visible(_ token: String, limit: Int = 6) -> String {
        var s = ""
        for c in token {
            switch c {
            case "\n": s += "⏎"
            case " ": s += "␣"
            case "\t": s += "⇥"
            case "\r": s += "␍"
            default: s.append(c)
            }
        }
        return s.count > limit ? String(s.prefix(limit - 1)) + "…" : s
    }

    public func svg() -> String {
        let n = routing.tokens.count, layers = routing.layers.count, e = max(routing.expertCount, 1)
        let per = max(1, tokensPerBand), bands = max(1, (n + per - 1) / per)
        let left = 90.0, labelRow = 22.0
        let bandHeight = labelRow + Double(max(layers, 1)) * cellSize + 16
        let gridWidth = Double(min(n, per)) * cellSize
        let top = 44.0
        let legendTop = top + Double(bands) * bandHeight + 8
        let legendRows = (e + 15) / 16
        var canvas = Canvas(width: max(left + gridWidth + 30, 560), height: legendTop + 30 + Double(legendRows) * 20)
        canvas.text(title, x: canvas.width / 2, y: 24, size: 16, weight: "bold")
        for band in 0..<bands {
            let y0 = top + Double(band) * bandHeight
            let range = (band * per)..<min(n, (band + 1) * per)
            for (column, t) in range.enumerated() {
                canvas.text(Self.visible(routing.tokens[t], limit: 4), x: left + (Double(column) + 0.5) * cellSize,
                            y: y0 + labelRow - 6, size: 11)
            }
            for (row, layer) in routing.layers.enumerated() {
                let y = y0 + labelRow + Double(row) * cellSize
                canvas.text("layer \(layer.layer)", x: left - 8, y: y + cellSize / 2 + 4, anchor: "end", size: 11)
                for (column, t) in range.enumerated() {
                    let x = left + Double(column) * cellSize
                    let expert = layer.experts[t].first, weight = Double(layer.weights[t].first ?? 0)
                    var fill = Colour(0.9, 0.9, 0.9)
                    if let expert {
                        // Paler for a smaller weight: mix with white, weight 0.25 at least so the hue stays legible.
                        let c = Self.colour(expert: expert, of: e), w = 0.25 + 0.75 * min(max(weight, 0), 1)
                        fill = Colour(1 - w + w * c.red, 1 - w + w * c.green, 1 - w + w * c.blue)
                    }
                    canvas.add("<rect x=\"\(px(x))\" y=\"\(px(y))\" width=\"\(px(cellSize))\" height=\"\(px(cellSize))\""
                               + " fill=\"\(fill.hex)\" stroke=\"#FFFFFF\"><title>\(Canvas.escape(routing.tokens[t])): "
                               + "expert \(expert.map(String.init) ?? "none"), weight \(String(format: "%.3f", weight))</title></rect>")
                    canvas.text(expert.map(String.init) ?? "–", x: x + cellSize / 2, y: y + cellSize / 2 + 4, size: 11,
                                fill: fill.contrastingText)
                }
            }
        }
        // Legend: one swatch per expert, and what the paleness means.
        canvas.text("top-1 expert (colour); paler = smaller weight (white 0, full 1):", x: 16, y: legendTop + 8,
                    anchor: "start", size: 11)
        for expert in 0..<e {
            let x = 16 + Double(expert % 16) * 34, y = legendTop + 18 + Double(expert / 16) * 20
            let c = Self.colour(expert: expert, of: e)
            canvas.add("<rect x=\"\(px(x))\" y=\"\(px(y))\" width=\"14\" height=\"14\" fill=\"\(c.hex)\"/>")
            canvas.text("\(expert)", x: x + 18, y: y + 11, anchor: "start", size: 11)
        }
        return canvas.document()
    }
}
