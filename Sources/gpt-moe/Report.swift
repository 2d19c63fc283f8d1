// The tables of the notes' "MoE vs Dense" section, filled in from this run,
// and the files of --out: summary.json, loss_curves.svg, expert_usage.svg,
// router_entropy.svg, routing_stability.svg (Notebooks/part6-specialization.md,
// §5). Every number printed here was measured in this process.
//
// The runs: Notebooks/part4-gpt.md, §8.
import Foundation
import MoE

struct RunReport {
    let options: Options
    let runs: [ModelRun]
    let corpus: String
    let vocabularySize: Int
    /// The text sampled at the end of `train`, if any.
    var sample: String? = nil

    init(options: Options, runs: [ModelRun], corpus: String, vocabularySize: Int) {
        self.options = options
        self.runs = runs
        self.corpus = corpus
        self.vocabularySize = vocabularySize
    }

    static func int(_ n: Int) -> String {
        let s = String(n)
        var out = ""
        for (i, c) in s.reversed().enumerated() { if i > 0 && i % 3 == 0 { out.append(",") }; out.append(c) }
        return String(out.reversed())
    }

    /// One line per evaluation: losses, throughput, the three phases per step.
    static func evaluationLine(_ r: EvaluationRecord, improved: Bool) -> String {
        var s = String(format: "val %.4f", r.validationLoss)
        if !r.trainLoss.isNaN { s = String(format: "train %.4f  ", r.trainLoss) + s }
        if r.weightedAuxLoss > 0 { s += String(format: "  α·aux %.4f", r.weightedAuxLoss) }
        // No tokens per second here (the "Time per step" table has the speed):
        // with it the line passes 80 columns (TerminalOutput.swift).
        if improved { s += "  (best)" }
        return s
    }

    /// Median seconds per step of each phase: from the interleaved timing rounds
    /// when `compare` ran them (main.swift says why), else over the run's steps.
    /// The median, not the mean: the machine may be shared, and a step another
    /// process interrupted says nothing about the model. (The results table has
    /// the plain sums.)
    static func perStep(_ run: ModelRun) -> StepTiming { run.interleaved ?? run.trainer.medianTiming }

    static func tokensPerSecond(_ run: ModelRun) -> Double {
        Double(run.trainer.step * run.trainer.tokensPerStep) / run.trainer.totalTiming.total
    }

    // MARK: Tables

    func tables() -> String {
        var text = ""
        func section(_ title: String, _ table: TextTable) { text += "\n\(title)\n\(table.render())\n" }

        // The notes' table. Their time columns are seconds per epoch; ours are the
        // measured seconds summed over the steps this run took (the step counts are
        // in the next table), never extrapolated.
        var results = TextTable(headers: ["Model", "Params", "Active", "Best val loss", "Val loss (all)",
                                          "Avg tokens/s", "Forward (s)", "Backward (s)", "Optimizer (s)", "Total (s)"])
        for run in runs {
            let t = run.trainer.totalTiming
            results.addRow([run.preset.name, Self.int(run.model.parameterCount), Self.int(run.model.activeParameterCount),
                            String(format: "%.4f", run.trainer.bestValidationLoss), String(format: "%.4f", run.fullValidationLoss),
                            Self.int(Int(Self.tokensPerSecond(run).rounded())),
                            String(format: "%.2f", t.forward), String(format: "%.2f", t.backward),
                            String(format: "%.2f", t.optimizer), String(format: "%.2f", t.total)])
        }
        section("Results (losses in nats per token; times summed over each run's training steps)", results)

        // Per step, and against dense when dense ran.
        let dense = runs.first { $0.model.moeLayers.isEmpty }
        var steps = TextTable(headers: ["Model", "Steps", "Tokens/step", "Forward ms", "Backward ms", "Optimizer ms",
                                        "Step ms"] + (dense != nil ? ["Step ×dense", "Backward ×dense"] : []))
        for run in runs {
            let p = Self.perStep(run)
            var row = [run.preset.name, "\(run.trainer.step)", Self.int(run.trainer.tokensPerStep),
                       String(format: "%.1f", 1000 * p.forward), String(format: "%.1f", 1000 * p.backward),
                       String(format: "%.1f", 1000 * p.optimizer), String(format: "%.1f", 1000 * p.total)]
            if let d = dense {
                // Per token, so throughput_opt's larger steps compare fairly.
                let q = Self.perStep(d)
                let scale = Double(d.trainer.tokensPerStep) / Double(run.trainer.tokensPerStep)
                row += [String(format: "%.2f×", p.total * scale / q.total), String(format: "%.2f×", p.backward * scale / q.backward)]
            }
            steps.addRow(row)
        }
        let source = runs.first?.interleaved != nil
            ? "median of \(options.timingRounds) interleaved rounds after training" : "median over the run's steps"
        section("Time per step (\(source))" + (dense != nil ? "; ratios per token against dense" : ""), steps)

        // Routing of the best weights on the whole validation split.
        let moeRuns = runs.filter { !$0.validationRouting.isEmpty }
        if !moeRuns.isEmpty {
            let e = moeRuns[0].validationRouting[0].usage.count
            var usage = TextTable(headers: ["Model", "Block"] + (0..<options.experts).map { "E\($0)" } + ["Entropy", "Load CV"])
            for run in moeRuns {
                for layer in run.validationRouting {
                    usage.addRow([run.preset.name, "\(layer.layer)"] + layer.usage.map { String(format: "%.1f%%", 100 * $0) }
                                 + [String(format: "%.3f", layer.routerEntropy), String(format: "%.3f", layer.loadCV)])
                }
            }
            section(String(format: "Expert usage and router entropy per MoE block (validation set; uniform %.1f%%, max entropy ln %d = %.3f nats)",
                           100 / Double(e), e, log(Double(e))), usage)
        }

        // When routing settled: the probe's agreement with its final routing (Analysis/StabilityCurve.swift).
        let probed = runs.filter { !$0.trainer.probeRecords.isEmpty && !$0.model.moeLayers.isEmpty }
        if let p = probed.first {
            // The agreement at the start and at each quarter of the run (the nearest evaluation at or before it).
            var stability = TextTable(headers: ["Model", "Block", "Stable ≥ 90% from step", "Step 0", "25%", "50%", "75%"])
            for run in probed {
                for (curve, (layer, _)) in zip(run.trainer.stabilityCurves, run.model.moeLayers) {
                    let quarters = [0, 1, 2, 3].map { q -> String in
                        let target = run.trainer.step * q / 4
                        guard let i = curve.steps.lastIndex(where: { $0 <= target }) else { return "-" }
                        return String(format: "%.0f%% @%d", 100 * curve.agreement[i], curve.steps[i])
                    }
                    stability.addRow([run.preset.name, "\(layer)", curve.firstStableStep().map(String.init) ?? "-"] + quarters)
                }
            }
            let tokens = p.trainer.probeInputs.reduce(0) { $0 + $1.count }
            section("Routing stability: share of \(Self.int(tokens)) probe tokens (\(p.trainer.probeInputs.count) validation windows) "
                    + "whose top-1 expert at each evaluation is their expert at the last", stability)
            text += probed.map { run in
                String(format: "%@: recording the probe took %.2f s, %.2f%% of the %.1f s of training steps\n", run.preset.name,
                       run.trainer.probeSeconds, 100 * run.trainer.probeSeconds / run.trainer.totalTiming.total,
                       run.trainer.totalTiming.total)
            }.joined()
        }
        return text
    }

    // MARK: Files

    var plotNames: [String] {
        ["loss_curves.svg"] + (runs.contains { !$0.validationRouting.isEmpty } ? ["expert_usage.svg", "router_entropy.svg"] : [])
            + (runs.contains { !$0.trainer.probeRecords.isEmpty && !$0.validationRouting.isEmpty } ? ["routing_stability.svg"] : [])
    }

    func summary() -> [String: Any] {
        func num(_ x: Double) -> Any { x.isFinite ? x : NSNull() }
        let models: [[String: Any]] = runs.map { run in
            let t = run.trainer.totalTiming, p = Self.perStep(run), c = run.model.config
            var entry: [String: Any] = [
                "name": run.preset.name,
                "preset": run.preset.summary,
                "params_total": run.model.parameterCount,
                "params_active": run.model.activeParameterCount,
                "moe_layers": c.moeLayers, "experts": c.moeLayers.isEmpty ? 0 : c.experts,
                "top_k": c.moeLayers.isEmpty ? 0 : c.topK,
                "aux_weight": c.moeLayers.isEmpty ? 0 : Double("\(c.routing.auxWeight)")!,
                "routing": c.moeLayers.isEmpty ? NSNull() : c.layerRouting.json as Any,
                "routing_summary": c.moeLayers.isEmpty ? "dense" : c.layerRouting.summary,
                "batch_size": run.trainer.config.batchSize,
                "steps": run.trainer.step,
                "stopped_early": run.stopReason == .earlyStopped,
                "best_val_loss": num(run.trainer.bestValidationLoss),
                "best_step": run.trainer.bestStep,
                "val_loss_all_windows": num(run.fullValidationLoss),
                "tokens_per_second": num(Self.tokensPerSecond(run)),
                "forward_seconds": t.forward, "backward_seconds": t.backward, "optimizer_seconds": t.optimizer,
                "train_seconds": t.total,
                "median_forward_ms_per_step": 1000 * p.forward, "median_backward_ms_per_step": 1000 * p.backward,
                "median_optimizer_ms_per_step": 1000 * p.optimizer, "median_step_ms": 1000 * p.total,
                "median_timing_source": run.interleaved != nil ? "interleaved_rounds" : "training_steps",
                "checkpoint": run.checkpoint.lastPathComponent,
                "evaluations": run.trainer.history.map { r -> [String: Any] in
                    // Step 0 is the evaluation before any training: nothing was trained
                    // or timed since a previous record, so those fields are null.
                    let trained = r.step > 0
                    var e: [String: Any] = ["step": r.step, "epoch": r.epoch, "train_loss": num(r.trainLoss),
                                            "aux_loss_weighted": trained ? r.weightedAuxLoss : NSNull(),
                                            "val_loss": r.validationLoss,
                                            "tokens_per_second": num(r.tokensPerSecond),
                                            "forward_seconds": trained ? r.timing.forward : NSNull(),
                                            "backward_seconds": trained ? r.timing.backward : NSNull(),
                                            "optimizer_seconds": trained ? r.timing.optimizer : NSNull()]
                    if !trained && !r.routing.isEmpty { e["routing"] = NSNull() }
                    if trained && !r.routing.isEmpty {
                        e["routing"] = r.routing.map { ["block": $0.layer, "usage": $0.usage, "router_entropy": $0.routerEntropy,
                                                        "load_cv": $0.loadCV] as [String: Any] }
                    }
                    return e
                },
            ]
            if !run.trainer.probeRecords.isEmpty && !run.validationRouting.isEmpty {
                // Notebooks/part6-specialization.md, §5 documents these keys.
                let t = run.trainer
                entry["routing_stability"] = [
                    "probe_windows": t.probeInputs.count, "probe_tokens": t.probeInputs.reduce(0) { $0 + $1.count },
                    "probe_seconds": t.probeSeconds, "probe_share_of_train_time": t.probeSeconds / t.totalTiming.total,
                    "threshold": 0.9,
                    "blocks": zip(t.stabilityCurves, run.model.moeLayers).map { curve, l -> [String: Any] in
                        ["block": l.layer, "steps": curve.steps, "agreement_with_final": curve.agreement,
                         "first_stable_step": curve.firstStableStep().map { $0 as Any } ?? NSNull()]
                    },
                ] as [String: Any]
            }
            if !run.validationRouting.isEmpty {
                entry["validation_routing"] = run.validationRouting.map {
                    ["block": $0.layer, "usage": $0.usage, "router_entropy": $0.routerEntropy, "load_cv": $0.loadCV] as [String: Any]
                }
            }
            return entry
        }
        var s: [String: Any] = ["config": options.json, "corpus": corpus, "vocabulary_size": vocabularySize, "models": models,
                                "machine": ["cores": ProcessInfo.processInfo.activeProcessorCount,
                                            "os": ProcessInfo.processInfo.operatingSystemVersionString]]
        if let sample { s["sample"] = sample }
        return s
    }

    func write(to directory: URL) throws {
        let json = try JSONSerialization.data(withJSONObject: summary(), options: [.prettyPrinted, .sortedKeys])
        try AtomicFile.write(json, to: directory.appendingPathComponent("summary.json"))

        // Loss curves: the training loss (mean over each interval) and the validation loss, per model,
        // against training tokens (so a preset with larger steps lines up with the others).
        func tokens(_ run: ModelRun, _ step: Int) -> Double { Double(step * run.trainer.tokensPerStep) / 1e6 }
        var series: [(name: String, points: [(x: Double, y: Double)])] = []
        for run in runs {
            let h = run.trainer.history
            series.append(("\(run.preset.name) train", h.filter { !$0.trainLoss.isNaN }.map { (tokens(run, $0.step), $0.trainLoss) }))
            series.append(("\(run.preset.name) val", h.map { (tokens(run, $0.step), $0.validationLoss) }))
        }
        let curves = LineChart(title: "Loss (nats per token)", xLabel: "training tokens (millions)", yLabel: "cross-entropy", series: series)
        try AtomicFile.write(Data(curves.svg().utf8), to: directory.appendingPathComponent("loss_curves.svg"))

        let moeRuns = runs.filter { !$0.validationRouting.isEmpty }
        guard let first = moeRuns.first?.validationRouting.first else { return }
        let e = first.usage.count
        var bars: [(name: String, values: [Double])] = []
        for run in moeRuns { for layer in run.validationRouting { bars.append(("\(run.preset.name) block \(layer.layer)", layer.usage)) } }
        let usage = BarChart(title: "Expert usage per MoE block (validation set)", xLabel: "expert",
                             yLabel: "share of routed slots", categories: (0..<e).map(String.init), series: bars,
                             referenceLine: (1 / Double(e), "uniform 1/E"))
        try AtomicFile.write(Data(usage.svg().utf8), to: directory.appendingPathComponent("expert_usage.svg"))

        var entropy: [(name: String, points: [(x: Double, y: Double)])] = []
        for run in moeRuns {
            for (i, layer) in run.validationRouting.enumerated() {
                // The curve is the training steps' routing; the table above reports the best
                // weights on the whole validation split, so the legend carries that value too:
                // the curve's last point and the table need not agree, and the reader sees both.
                entropy.append((String(format: "%@ block %d (validation %.3f)", run.preset.name, layer.layer,
                                       layer.routerEntropy),
                                run.trainer.history.filter { $0.step > 0 && i < $0.routing.count }
                                    .map { (tokens(run, $0.step), $0.routing[i].routerEntropy) }))
            }
        }
        let end = runs.map { tokens($0, $0.trainer.step) }.max() ?? 1
        entropy.append(("max ln E", [(0, log(Double(e))), (end, log(Double(e)))]))
        let entropyChart = LineChart(title: "Router entropy per MoE block, over training steps", xLabel: "training tokens (millions)",
                                     yLabel: "nats per token", series: entropy)
        try AtomicFile.write(Data(entropyChart.svg().utf8), to: directory.appendingPathComponent("router_entropy.svg"))

        // Beside it, on the same x axis: when each block's routing settled.
        var agreement: [(name: String, points: [(x: Double, y: Double)])] = []
        for run in moeRuns where !run.trainer.probeRecords.isEmpty {
            for (curve, l) in zip(run.trainer.stabilityCurves, run.model.moeLayers) {
                agreement.append(("\(run.preset.name) block \(l.layer)", zip(curve.steps, curve.agreement).map { (tokens(run, $0), $1) }))
            }
        }
        guard !agreement.isEmpty else { return }
        agreement.append(("90%", [(0, 0.9), (end, 0.9)]))
        agreement.append(("chance 1/E", [(0, 1 / Double(e)), (end, 1 / Double(e))]))
        let stability = LineChart(title: "Routing stability: probe tokens whose top-1 expert is their final one",
                                  xLabel: "training tokens (millions)", yLabel: "share of probe tokens", series: agreement,
                                  yRange: 0...1)
        try AtomicFile.write(Data(stability.svg().utf8), to: directory.appendingPathComponent("routing_stability.svg"))
    }
}
