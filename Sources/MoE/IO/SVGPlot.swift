// SVGPlot: line charts, heatmaps, bar charts and row charts written as SVG text.
//
// The figures this project needs (loss curves, which expert each digit is sent
// to, how evenly the experts are used) are simple, and SVG is simple too: a
// text file of rectangles, lines and labels in pixel coordinates that every
// browser and Markdown viewer displays. Writing it by hand keeps the package
// free of dependencies, makes every figure diffable text, and takes less code
// than adapting to a plotting library.
//
// Three ideas carry all four charts:
//   * A linear scale maps a data interval onto a pixel interval. SVG's y axis
//     points down, so larger values get smaller y.
//   * "Nice" ticks: a step of 1, 2 or 5 times a power of ten, chosen so about
//     five ticks cover the data, with the axis widened to whole steps. Ticks at
//     0, 0.5, 1.0 read at a glance; ticks at 0.137, 0.274 do not.
//   * Bad input draws an honest empty chart, never a crash: NaN and infinite
//     values are skipped, a constant or single value gets a small padded range,
//     and every piece of text is escaped so that `<`, `&` or a stray control
//     character in a label cannot break the XML.

import Foundation

// MARK: - Line chart

/// Lines through (x, y) points, one per series, e.g. training and test loss per epoch.
///
///     let chart = LineChart(title: "Loss", xLabel: "epoch", yLabel: "cross-entropy",
///                           series: [("train", [(1, 0.9), (2, 0.4)]), ("test", [(1, 1.0), (2, 0.5)])])
///     try AtomicFile.write(Data(chart.svg().utf8), to: URL(fileURLWithPath: "loss.svg"))
public struct LineChart {
    public var title: String
    public var xLabel: String
    public var yLabel: String
    /// Each series is drawn in its own colour (and, past seven series, its own dash pattern).
    public var series: [(name: String, points: [(x: Double, y: Double)])]
    /// The y interval to show; `nil` fits the data. Lines leaving it are clipped.
    public var yRange: ClosedRange<Double>?
    /// Size of the whole figure in pixels.
    public var width = 720.0, height = 440.0

    public init(title: String, xLabel: String, yLabel: String,
                series: [(name: String, points: [(x: Double, y: Double)])],
                yRange: ClosedRange<Double>? = nil) {
        self.title = title
        self.xLabel = xLabel
        self.yLabel = yLabel
        self.series = series
        self.yRange = yRange
    }

    /// The chart as a complete SVG document.
    public func svg() -> String {
        let finite = series.map { $0.points.filter { $0.x.isFinite && $0.y.isFinite } }
        let all = finite.joined()
        let xAxis = Axis(fitting: all.map(\.x))
        let yAxis = yRange.map { Axis(fixed: $0) } ?? Axis(fitting: all.map(\.y))

        var canvas = Canvas(width: width, height: height)
        let plot = PlotArea(left: 70, top: 40, right: width - 170, bottom: height - 55)
        canvas.frame(title: title, xLabel: xLabel, yLabel: yLabel, plot: plot)
        canvas.yGrid(yAxis, plot: plot)
        canvas.xGrid(xAxis, plot: plot)
        if all.isEmpty { canvas.text("no data", x: plot.centerX, y: plot.centerY, fill: "#888888") }

        canvas.clipPath(plot)
        var legend: [LegendEntry] = []
        for (index, points) in finite.enumerated() {
            let style = LegendEntry(name: series[index].name, index: index)
            legend.append(style)
            let pixels = points.map { (plot.x($0.x, on: xAxis), plot.y($0.y, on: yAxis)) }
            if pixels.count == 1 {
                // A line through one point is invisible: draw the point itself.
                canvas.add("<circle cx=\"\(px(pixels[0].0))\" cy=\"\(px(pixels[0].1))\" r=\"3.5\""
                           + " fill=\"\(style.colour)\" clip-path=\"url(#plot-area)\"/>")
            } else if pixels.count > 1 {
                let list = pixels.map { "\(px($0.0)),\(px($0.1))" }.joined(separator: " ")
                canvas.add("<polyline points=\"\(list)\" fill=\"none\" stroke=\"\(style.colour)\""
                           + " stroke-width=\"2\"\(style.dashAttribute) stroke-linejoin=\"round\""
                           + " clip-path=\"url(#plot-area)\"/>")
            }
        }
        canvas.legend(legend, x: plot.right + 16, y: plot.top)
        return canvas.document()
    }
}

// MARK: - Heatmap

/// A grid of coloured cells, one row per `rowLabels` entry and one column per
/// `columnLabels` entry, each cell showing its value: for example the fraction
/// of each digit's tokens routed to each expert.
public struct Heatmap {
    public var title: String
    public var rowLabels: [String]
    public var columnLabels: [String]
    /// rows × columns, e.g. `values[digit][expert]`. Missing or NaN cells are drawn grey.
    public var values: [[Double]]
    public var xLabel: String
    public var yLabel: String
    /// The values mapped to the ends of the colour scale; `nil` uses the data's minimum and maximum.
    public var valueRange: ClosedRange<Double>?
    /// How a value is printed in its cell and on the legend (default: a percentage).
    public var format: (Double) -> String
    /// Side of one square cell, in pixels.
    public var cellSize = 44.0

    public init(title: String, rowLabels: [String], columnLabels: [String], values: [[Double]],
                xLabel: String, yLabel: String, valueRange: ClosedRange<Double>? = nil,
                format: @escaping (Double) -> String = Heatmap.percent) {
        self.title = title
        self.rowLabels = rowLabels
        self.columnLabels = columnLabels
        self.values = values
        self.xLabel = xLabel
        self.yLabel = yLabel
        self.valueRange = valueRange
        self.format = format
    }

    /// Formats a fraction as a whole percentage: 0.237 → "24%".
    public static func percent(_ value: Double) -> String { String(format: "%.0f%%", value * 100) }

    /// The heatmap as a complete SVG document.
    public func svg() -> String {
        let rows = max(values.count, rowLabels.count)
        let columns = max(values.map(\.count).max() ?? 0, columnLabels.count)
        let finite = values.joined().filter(\.isFinite)
        var low = valueRange?.lowerBound ?? finite.min() ?? 0
        var high = valueRange?.upperBound ?? finite.max() ?? 1
        if !(low.isFinite && high.isFinite) { (low, high) = (0, 1) }
        if low == high { (low, high) = low == 0 ? (0, 1) : (min(0, low), max(0, low)) }  // constant data

        // Margins grow with the longest label so nothing is cut off.
        let longestRowLabel = rowLabels.map(\.count).max() ?? 1
        let left = 40 + Double(longestRowLabel) * 7
        let gridWidth = Double(columns) * cellSize, gridHeight = Double(max(rows, 3)) * cellSize
        let plot = PlotArea(left: left, top: 44, right: left + gridWidth, bottom: 44 + gridHeight)
        var canvas = Canvas(width: plot.right + 130, height: plot.bottom + 60)
        canvas.frame(title: title, xLabel: xLabel, yLabel: yLabel, plot: plot, yLabelX: 16)

        for row in 0..<rows {
            let y = plot.top + Double(row) * cellSize
            let label = row < rowLabels.count ? rowLabels[row] : "\(row)"
            canvas.text(label, x: plot.left - 8, y: y + cellSize / 2 + 4, anchor: "end")
            for column in 0..<columns {
                let x = plot.left + Double(column) * cellSize
                let value = row < values.count && column < values[row].count ? values[row][column] : .nan
                let fill = value.isFinite ? Colour.viridis((value - low) / (high - low)) : Colour(0.9, 0.9, 0.9)
                canvas.add("<rect x=\"\(px(x))\" y=\"\(px(y))\" width=\"\(px(cellSize))\" height=\"\(px(cellSize))\""
                           + " fill=\"\(fill.hex)\" stroke=\"#ffffff\"/>")
                canvas.text(value.isFinite ? format(value) : "–", x: x + cellSize / 2, y: y + cellSize / 2 + 4,
                            size: 11, fill: fill.contrastingText)
            }
        }
        for column in 0..<columns {
            let label = column < columnLabels.count ? columnLabels[column] : "\(column)"
            canvas.text(label, x: plot.left + (Double(column) + 0.5) * cellSize, y: plot.bottom + 16)
        }

        // The colour legend: a vertical gradient from low (bottom) to high (top).
        let barX = plot.right + 24
        var stops = ""
        for step in 0...10 {
            let t = Double(step) / 10
            stops += "<stop offset=\"\(px(t))\" stop-color=\"\(Colour.viridis(t).hex)\"/>"
        }
        canvas.add("<linearGradient id=\"heat-scale\" x1=\"0\" y1=\"1\" x2=\"0\" y2=\"0\">\(stops)</linearGradient>")
        canvas.add("<rect x=\"\(px(barX))\" y=\"\(px(plot.top))\" width=\"16\" height=\"\(px(gridHeight))\""
                   + " fill=\"url(#heat-scale)\" stroke=\"#444444\" stroke-width=\"0.5\"/>")
        for tick in Axis(fixed: low...high).ticks {
            let y = plot.bottom - (tick - low) / (high - low) * gridHeight
            canvas.line(barX + 16, y, barX + 20, y, stroke: "#444444")
            canvas.text(format(tick), x: barX + 24, y: y + 4, anchor: "start", size: 11)
        }
        return canvas.document()
    }
}

// MARK: - Bar chart

/// Grouped bars: one group per category, one bar per series inside each group,
/// e.g. the share of tokens each expert receives (categories) under several
/// models (series), with a dashed reference line at the uniform share 1/E.
public struct BarChart {
    public var title: String
    public var xLabel: String
    public var yLabel: String
    /// One label per group along the x axis, e.g. "0" … "7" for experts.
    public var categories: [String]
    /// `values[i]` is the bar for `categories[i]`; missing or non-finite values draw no bar.
    public var series: [(name: String, values: [Double])]
    /// A horizontal dashed line, e.g. `(1.0 / 8, "uniform 1/E")`.
    public var referenceLine: (value: Double, label: String)?
    /// The y interval to show; `nil` fits the data, always including zero.
    public var yRange: ClosedRange<Double>?
    public var width = 720.0, height = 440.0

    public init(title: String, xLabel: String, yLabel: String, categories: [String],
                series: [(name: String, values: [Double])],
                referenceLine: (value: Double, label: String)? = nil,
                yRange: ClosedRange<Double>? = nil) {
        self.title = title
        self.xLabel = xLabel
        self.yLabel = yLabel
        self.categories = categories
        self.series = series
        self.referenceLine = referenceLine
        self.yRange = yRange
    }

    /// The chart as a complete SVG document.
    public func svg() -> String {
        let groups = max(categories.count, series.map(\.values.count).max() ?? 0)
        var fitted = series.flatMap(\.values).filter(\.isFinite) + [0]  // bars grow from zero
        if let reference = referenceLine?.value, reference.isFinite { fitted.append(reference) }
        let yAxis = yRange.map { Axis(fixed: $0) } ?? Axis(fitting: fitted)

        var canvas = Canvas(width: width, height: height)
        let plot = PlotArea(left: 70, top: 40, right: width - 170, bottom: height - 55)
        canvas.frame(title: title, xLabel: xLabel, yLabel: yLabel, plot: plot)
        canvas.yGrid(yAxis, plot: plot)
        if groups == 0 { canvas.text("no data", x: plot.centerX, y: plot.centerY, fill: "#888888") }

        // Each group takes an equal slice of the width; its bars fill 80% of it,
        // leaving a gap that separates one group from the next.
        let groupWidth = plot.width / Double(max(groups, 1))
        let barWidth = groupWidth * 0.8 / Double(max(series.count, 1))
        let baseline = plot.y(min(max(0, yAxis.lower), yAxis.upper), on: yAxis)
        canvas.clipPath(plot)
        var legend: [LegendEntry] = []
        for (index, entry) in series.enumerated() {
            let style = LegendEntry(name: entry.name, index: index)
            legend.append(style)
            for (group, value) in entry.values.enumerated() where value.isFinite {
                let x = plot.left + Double(group) * groupWidth + groupWidth * 0.1 + Double(index) * barWidth
                let top = plot.y(value, on: yAxis)
                canvas.add("<rect x=\"\(px(x))\" y=\"\(px(min(top, baseline)))\" width=\"\(px(barWidth))\""
                           + " height=\"\(px(abs(baseline - top)))\" fill=\"\(style.colour)\" clip-path=\"url(#plot-area)\"/>")
            }
        }
        for group in 0..<groups {
            let label = group < categories.count ? categories[group] : "\(group)"
            canvas.text(label, x: plot.left + (Double(group) + 0.5) * groupWidth, y: plot.bottom + 16, size: 11)
        }
        if let reference = referenceLine, reference.value.isFinite {
            let y = plot.y(reference.value, on: yAxis)
            canvas.line(plot.left, y, plot.right, y, stroke: "#333333", width: 1.5, dash: "6 4")
            legend.append(LegendEntry(name: reference.label, colour: "#333333", dash: "6 4"))
        }
        canvas.legend(legend, x: plot.right + 16, y: plot.top)
        return canvas.document()
    }
}

// MARK: - Row chart

/// Named rows of horizontal bars, in side-by-side panels that each have their
/// own axis, e.g. one row per routing configuration with its test accuracy in
/// one panel (on 85–100%, where the differences are) and its load shares in
/// another (on 0–100%). Each bar prints its value at its end, so the picture
/// and the table beside it can be read against each other without counting.
public struct RowChart {
    /// One panel: a measure per row, on an axis of its own.
    public struct Panel {
        public var title: String
        /// The axis; values outside it are cut off at the edge (their printed value is not).
        public var range: ClosedRange<Double>
        /// One or more bars per row, e.g. ("top-2 share", …) and ("dropped", …).
        public var series: [(name: String, values: [Double])]
        /// How a value is printed at its bar and on the axis (default: a percentage with one decimal).
        public var format: (Double) -> String
        /// How an axis tick is printed (default: a whole percentage).
        public var tickFormat: (Double) -> String
        /// A dashed vertical line, e.g. the even top-2 share 2/8.
        public var referenceLine: (value: Double, label: String)?

        public init(title: String, range: ClosedRange<Double>, series: [(name: String, values: [Double])],
                    format: @escaping (Double) -> String = { String(format: "%.1f%%", $0 * 100) },
                    tickFormat: @escaping (Double) -> String = { String(format: "%.0f%%", $0 * 100) },
                    referenceLine: (value: Double, label: String)? = nil) {
            self.title = title
            self.range = range
            self.series = series
            self.format = format
            self.tickFormat = tickFormat
            self.referenceLine = referenceLine
        }
    }

    public var title: String
    public var rows: [String]
    public var panels: [Panel]
    public var panelWidth = 300.0, rowHeight = 26.0

    public init(title: String, rows: [String], panels: [Panel]) {
        self.title = title
        self.rows = rows
        self.panels = panels
    }

    /// The chart as a complete SVG document.
    public func svg() -> String {
        // The left margin grows with the longest row name so nothing is cut off.
        let left = 20 + Double(rows.map(\.count).max() ?? 1) * 6.6
        let gap = 70.0, top = 60.0
        let plotHeight = Double(max(rows.count, 1)) * rowHeight
        let legendRows = panels.map { $0.series.count + ($0.referenceLine == nil ? 0 : 1) }.max() ?? 0
        var canvas = Canvas(width: left + Double(panels.count) * (panelWidth + gap) + 10,
                            height: top + plotHeight + 40 + Double(legendRows) * 20 + 10)
        canvas.text(title, x: canvas.width / 2, y: 24, size: 16, weight: "bold")
        if rows.isEmpty { canvas.text("no data", x: canvas.width / 2, y: top + 20, fill: "#888888") }
        for (row, name) in rows.enumerated() {
            canvas.text(name, x: left - 8, y: top + (Double(row) + 0.5) * rowHeight + 4, anchor: "end", size: 11)
        }
        for (p, panel) in panels.enumerated() {
            let x0 = left + Double(p) * (panelWidth + gap)
            let plot = PlotArea(left: x0, top: top, right: x0 + panelWidth, bottom: top + plotHeight)
            let axis = Axis(fixed: panel.range)
            canvas.text(panel.title, x: plot.centerX, y: top - 12, size: 12, weight: "bold")
            for tick in axis.ticks {
                let x = plot.x(tick, on: axis)
                canvas.line(x, plot.top, x, plot.bottom, stroke: "#E5E5E5")
                canvas.text(panel.tickFormat(tick), x: x, y: plot.bottom + 16, size: 11)
            }
            canvas.line(plot.left, plot.bottom, plot.right, plot.bottom, stroke: "#444444")
            canvas.line(plot.left, plot.top, plot.left, plot.bottom, stroke: "#444444")
            let barHeight = rowHeight * 0.8 / Double(max(panel.series.count, 1))
            var legend: [LegendEntry] = []
            for (index, entry) in panel.series.enumerated() {
                let style = LegendEntry(name: entry.name, index: index)
                legend.append(style)
                for (row, value) in entry.values.enumerated() where value.isFinite && row < rows.count {
                    let y = top + Double(row) * rowHeight + rowHeight * 0.1 + Double(index) * barHeight
                    let end = plot.x(min(max(value, axis.lower), axis.upper), on: axis)
                    canvas.add("<rect x=\"\(px(plot.left))\" y=\"\(px(y))\" width=\"\(px(max(0, end - plot.left)))\""
                               + " height=\"\(px(barHeight))\" fill=\"\(style.colour)\"/>")
                    canvas.text(panel.format(value), x: end + 3, y: y + barHeight / 2 + 3.5, anchor: "start",
                                size: min(10, barHeight + 1))
                }
            }
            if let reference = panel.referenceLine, reference.value.isFinite {
                let x = plot.x(reference.value, on: axis)
                canvas.line(x, plot.top, x, plot.bottom, stroke: "#333333", width: 1.5, dash: "6 4")
                legend.append(LegendEntry(name: reference.label, colour: "#333333", dash: "6 4"))
            }
            canvas.legend(legend, x: plot.left, y: plot.bottom + 28)
        }
        return canvas.document()
    }
}

// MARK: - Shared machinery

/// A data interval with its tick values, as drawn along one axis.
struct Axis {
    var lower: Double, upper: Double
    var ticks: [Double]
    /// Decimals that print every tick exactly (a step of 0.05 needs two).
    var decimals: Int

    /// Fits the finite `values`, widened outward to whole nice steps.
    init(fitting values: [Double]) {
        let finite = values.filter(\.isFinite)
        self.init(lower: finite.min() ?? 0, upper: finite.max() ?? 1, widen: true)
    }

    /// Exactly `range`, with nice ticks inside it.
    init(fixed range: ClosedRange<Double>) {
        let usable = range.lowerBound.isFinite && range.upperBound.isFinite
        self.init(lower: usable ? range.lowerBound : 0, upper: usable ? range.upperBound : 1, widen: !usable)
    }

    private init(lower: Double, upper: Double, widen: Bool) {
        var (lower, upper) = (lower, upper)
        if lower == upper {  // a constant: pad by 10% of its size (or by 1 around zero)
            let pad = lower == 0 ? 1 : abs(lower) * 0.1
            (lower, upper) = (lower - pad, upper + pad)
        }
        // Aim for about five ticks: the raw step, rounded up to 1, 2 or 5 × 10^k.
        let raw = (upper - lower) / 5
        guard raw.isFinite, raw > 0 else {  // a span beyond Double's range: just label the ends
            self.lower = lower; self.upper = upper; ticks = [lower, upper]; decimals = -1
            return
        }
        let power = (log10(raw)).rounded(.down)
        let magnitude = pow(10, power)
        let step = [1.0, 2, 5, 10].first { $0 * magnitude >= raw * (1 - 1e-9) }! * magnitude
        if widen {
            lower = (lower / step).rounded(.down) * step
            upper = (upper / step).rounded(.up) * step
        }
        let first = (lower / step - 1e-9).rounded(.up)
        let last = (upper / step + 1e-9).rounded(.down)
        self.lower = lower
        self.upper = upper
        ticks = first <= last ? (0...Int(last - first)).map { (first + Double($0)) * step } : []
        decimals = max(0, -Int(power) + (step >= 10 * magnitude ? -1 : 0))
    }

    /// A tick value as text, never "-0".
    func label(_ value: Double) -> String {
        if decimals < 0 || abs(value) >= 1e7 || (value != 0 && abs(value) < 1e-5) {
            return String(format: "%g", value)
        }
        let text = String(format: "%.\(decimals)f", value)
        return Double(text) == 0 ? String(format: "%.\(decimals)f", 0.0) : text
    }
}

/// The rectangle inside the axes, and the linear scales onto it.
struct PlotArea {
    var left: Double, top: Double, right: Double, bottom: Double
    var width: Double { right - left }
    var height: Double { bottom - top }
    var centerX: Double { (left + right) / 2 }
    var centerY: Double { (top + bottom) / 2 }

    /// x: the data interval [lower, upper] onto pixels [left, right].
    func x(_ value: Double, on axis: Axis) -> Double {
        clamp(left + (value - axis.lower) / (axis.upper - axis.lower) * width)
    }
    /// y: onto [bottom, top], flipped because SVG's y grows downward.
    func y(_ value: Double, on axis: Axis) -> Double {
        clamp(bottom - (value - axis.lower) / (axis.upper - axis.lower) * height)
    }
    /// Far-off values (clipped anyway) stay printable as short numbers.
    private func clamp(_ pixel: Double) -> Double {
        pixel.isFinite ? min(max(pixel, -1e5), 1e5) : 0
    }
}

/// One line of a legend: a coloured sample and a name.
struct LegendEntry {
    var name: String
    var colour: String
    var dash: String?

    /// Okabe and Ito's colour-blind-safe palette (its yellow is too pale on white and
    /// is left out). Past seven series the colours repeat with a dash pattern.
    static let palette = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000"]

    init(name: String, colour: String, dash: String?) {
        self.name = name
        self.colour = colour
        self.dash = dash
    }

    init(name: String, index: Int) {
        let round = index / Self.palette.count
        self.init(name: name, colour: Self.palette[index % Self.palette.count],
                  dash: round == 0 ? nil : ["6 3", "2 3", "8 3 2 3"][(round - 1) % 3])
    }

    var dashAttribute: String { dash.map { " stroke-dasharray=\"\($0)\"" } ?? "" }
}

/// An RGB colour with components in 0...1.
struct Colour {
    var red: Double, green: Double, blue: Double
    init(_ red: Double, _ green: Double, _ blue: Double) { (self.red, self.green, self.blue) = (red, green, blue) }

    var hex: String {
        String(format: "#%02X%02X%02X", Int((red * 255).rounded()), Int((green * 255).rounded()), Int((blue * 255).rounded()))
    }

    /// Black or white, whichever is more legible on this colour. Luminance weights
    /// the channels by how bright the eye finds them (green most, blue least).
    var contrastingText: String {
        0.2126 * red + 0.7152 * green + 0.0722 * blue > 0.45 ? "#000000" : "#FFFFFF"
    }

    /// The viridis scale at `t` in 0...1 (dark purple → teal → yellow), by linear
    /// interpolation between five of its colours. Its brightness rises steadily,
    /// so larger always looks brighter, also in grey print and to colour-blind eyes.
    static func viridis(_ t: Double) -> Colour {
        let stops = [(0.267, 0.005, 0.329), (0.231, 0.322, 0.545), (0.129, 0.569, 0.549),
                     (0.369, 0.788, 0.384), (0.992, 0.906, 0.145)]
        let position = (t.isFinite ? min(max(t, 0), 1) : 0) * Double(stops.count - 1)
        let index = min(Int(position), stops.count - 2)
        let f = position - Double(index)
        let (a, b) = (stops[index], stops[index + 1])
        return Colour(a.0 + (b.0 - a.0) * f, a.1 + (b.1 - a.1) * f, a.2 + (b.2 - a.2) * f)
    }
}

/// A coordinate as short text: two decimals are far below a pixel.
func px(_ value: Double) -> String { String(format: "%.2f", value) }

/// Collects SVG elements and wraps them into a document. (Internal, not private:
/// Analysis/TokenRoutingChart.swift draws with it too.)
struct Canvas {
    var width: Double, height: Double
    private var elements: [String] = []

    init(width: Double, height: Double) { (self.width, self.height) = (width, height) }

    mutating func add(_ element: String) { elements.append(element) }

    /// XML-escaped text. Control characters are not allowed in XML at all, so they are dropped.
    static func escape(_ text: String) -> String {
        var out = ""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&apos;"
            case _ where scalar.value < 0x20 || scalar.value == 0xFFFE || scalar.value == 0xFFFF: continue
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out
    }

    mutating func text(_ text: String, x: Double, y: Double, anchor: String = "middle", size: Double = 12,
                       fill: String = "#222222", weight: String? = nil, rotate: Bool = false) {
        let transform = rotate ? " transform=\"rotate(-90 \(px(x)) \(px(y)))\"" : ""
        let bold = weight.map { " font-weight=\"\($0)\"" } ?? ""
        add("<text x=\"\(px(x))\" y=\"\(px(y))\" text-anchor=\"\(anchor)\" font-size=\"\(px(size))\""
            + " fill=\"\(fill)\"\(bold)\(transform)>\(Canvas.escape(text))</text>")
    }

    mutating func line(_ x1: Double, _ y1: Double, _ x2: Double, _ y2: Double,
                       stroke: String, width: Double = 1, dash: String? = nil) {
        let dashed = dash.map { " stroke-dasharray=\"\($0)\"" } ?? ""
        add("<line x1=\"\(px(x1))\" y1=\"\(px(y1))\" x2=\"\(px(x2))\" y2=\"\(px(y2))\""
            + " stroke=\"\(stroke)\" stroke-width=\"\(px(width))\"\(dashed)/>")
    }

    /// Title above, axis labels below and to the left (rotated), and the axis lines.
    mutating func frame(title: String, xLabel: String, yLabel: String, plot: PlotArea, yLabelX: Double = 18) {
        text(title, x: width / 2, y: 24, size: 16, weight: "bold")
        text(xLabel, x: plot.centerX, y: plot.bottom + 40)
        text(yLabel, x: yLabelX, y: plot.centerY, rotate: true)
    }

    /// Horizontal grid lines and labels at each y tick, then the y axis line.
    mutating func yGrid(_ axis: Axis, plot: PlotArea) {
        for tick in axis.ticks {
            let y = plot.y(tick, on: axis)
            line(plot.left, y, plot.right, y, stroke: "#E5E5E5")
            text(axis.label(tick), x: plot.left - 6, y: y + 4, anchor: "end", size: 11)
        }
        line(plot.left, plot.top, plot.left, plot.bottom, stroke: "#444444")
        line(plot.left, plot.bottom, plot.right, plot.bottom, stroke: "#444444")
    }

    /// Vertical grid lines and labels at each x tick.
    mutating func xGrid(_ axis: Axis, plot: PlotArea) {
        for tick in axis.ticks {
            let x = plot.x(tick, on: axis)
            line(x, plot.top, x, plot.bottom, stroke: "#E5E5E5")
            text(axis.label(tick), x: x, y: plot.bottom + 16, size: 11)
        }
        line(plot.left, plot.bottom, plot.right, plot.bottom, stroke: "#444444")
    }

    /// Data outside the axes (beyond a fixed `yRange`) is cut off at the plot's edge.
    mutating func clipPath(_ plot: PlotArea) {
        add("<clipPath id=\"plot-area\"><rect x=\"\(px(plot.left))\" y=\"\(px(plot.top))\""
            + " width=\"\(px(plot.width))\" height=\"\(px(plot.height))\"/></clipPath>")
    }

    mutating func legend(_ entries: [LegendEntry], x: Double, y: Double) {
        for (row, entry) in entries.enumerated() {
            let rowY = y + 8 + Double(row) * 20
            line(x, rowY, x + 24, rowY, stroke: entry.colour, width: 3, dash: entry.dash)
            text(entry.name, x: x + 30, y: rowY + 4, anchor: "start")
        }
    }

    /// The finished document: the grid lines are drawn first, so data sits on top.
    func document() -> String {
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
            + "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(px(width))\" height=\"\(px(height))\""
            + " viewBox=\"0 0 \(px(width)) \(px(height))\" font-family=\"Helvetica, Arial, sans-serif\">\n"
            + "<rect width=\"100%\" height=\"100%\" fill=\"#FFFFFF\"/>\n"
            + elements.joined(separator: "\n") + "\n</svg>\n"
    }
}
