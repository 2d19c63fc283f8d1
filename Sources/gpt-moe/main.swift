// gpt-moe: a tiny GPT with pluggable MoE feed-forward layers, trained by hand-
// written backprop, and the dense-vs-MoE comparison of the notes.
//
//     swift run gpt-moe                     # train the MoE baseline on Tiny Shakespeare, print a sample
//     swift run gpt-moe compare             # the five presets under one seed, the notes' table
//     swift run gpt-moe sample --prompt "ROMEO:"   # from the checkpoint train wrote (runs/gpt-moe/baseline.safetensors)
//     swift run gpt-moe route --checkpoint runs/gpt-moe/baseline.safetensors --prompt "ROMEO:"   # Analysis.swift
//     swift run gpt-moe specialize --checkpoint runs/gpt-moe/baseline.safetensors --domains Notebooks/domains
//     swift run gpt-moe --help              # every option
//
// Reads the corpus (downloading Tiny Shakespeare if missing), builds the
// tokenizer, trains, prints the tables from this run, and writes
// summary.json, SVG plots, the best checkpoint of each model and its
// tokenizer to --out. Notebooks/part4-gpt.md reads a run.
import Foundation
import MoE
import Exercises

/// One line on standard error and the exit status: 1 for a failed run; 2 for
/// a usage error, which also says where the whole usage is (never prints it).
func fail(_ message: String, usage: Bool = false, status: Int32 = 1) -> Never {
    let line = usage ? UsageError.line(program: "gpt-moe", UsageError(message)) : "gpt-moe: \(message)"
    FileHandle.standardError.write(Data((line + "\n").utf8))
    exit(status)
}

// MARK: - Options

// The exercises' routers and your own become --router words (RouterRegistry.swift).
ExerciseRouters.register()

// route and specialize read a checkpoint and have options of their own (Analysis.swift).
if let first = CommandLine.arguments.dropFirst().first, AnalysisOptions.commands.contains(first) {
    runAnalysisCommand(Array(CommandLine.arguments.dropFirst()))
}

let options: Options
do {
    options = try Options.parse(Array(CommandLine.arguments.dropFirst()))
} catch {
    fail("\(error)", usage: true, status: 2)
}
if options.help {
    print(Options.usage)
    exit(0)
}
Parallel.threads = options.threads

// MARK: - sample

if options.command == "sample" {
    let url = URL(fileURLWithPath: options.sampleCheckpoint)
    if options.checkpoint == nil && !FileManager.default.fileExists(atPath: url.path) {
        fail("\(url.path): no checkpoint there yet; train one with `gpt-moe train` (same --out and --preset), or pass --checkpoint FILE")
    }
    let loaded: (model: GPT, tokenizer: Tokenizer, metadata: [String: String])
    do { loaded = try GPTCheckpoint.load(from: url) } catch { fail("\(error)") }
    var rng = Xoshiro256(seed: options.seed)
    let prompt = loaded.tokenizer.encode(options.prompt)
    let tokens = loaded.model.generate(prompt: prompt, count: options.length, temperature: options.temperature,
                                       topK: options.sampleTopK, rng: &rng)
    print(options.prompt + loaded.tokenizer.decode(tokens))
    exit(0)
}

// MARK: - Data

let corpusText: String
let corpusName: String
if options.synthetic {
    corpusText = SyntheticText.generate(characters: options.syntheticCharacters, seed: options.seed)
    corpusName = "synthetic (\(options.syntheticCharacters) characters, seed \(options.seed))"
} else {
    let path = options.text ?? TinyShakespeare.defaultPath
    let url = URL(fileURLWithPath: path)
    if options.text == nil && !FileManager.default.fileExists(atPath: url.path) {
        guard options.download else {
            fail("\(url.path): no such file (run without --no-download to fetch Tiny Shakespeare, or pass --text FILE)")
        }
        let bar = ProgressBar(title: "Tiny Shakespeare", total: TinyShakespeare.byteCount / 1024)
        do {
            try TinyShakespeare.download(to: url) { received, _ in bar.update(received / 1024, status: "\(received / 1024) KiB") }
            bar.update(TinyShakespeare.byteCount / 1024)   // a bar that finishes at 100%
            bar.finish(status: "from \(TinyShakespeare.sourceURL.host ?? "github")")
        } catch {
            fail("\(error)")
        }
    }
    do {
        let (text, replaced) = try TextCorpus.load(url)
        corpusText = text
        corpusName = path + (replaced > 0 ? " (\(replaced) invalid UTF-8 sequences replaced by U+FFFD)" : "")
    } catch {
        fail("\(error)")
    }
}

let (trainText, validationText) = TextCorpus.split(corpusText, validationFraction: options.validationFraction)
let tokenizer: Tokenizer
let tokenizerStart = Date()
if options.tokenizer == "bpe" {
    tokenizer = BPETokenizer(training: trainText, vocabularySize: options.vocab)
} else {
    tokenizer = CharTokenizer(training: trainText)
}
let trainTokens = tokenizer.encode(trainText), validationTokens = tokenizer.encode(validationText)
let tokenizerSeconds = Date().timeIntervalSince(tokenizerStart)
let split = TokenSplit(tokens: trainTokens + validationTokens, cut: trainTokens.count,
                       context: options.context, stride: options.stride ?? options.context)
guard split.train.count > 0 && split.validation.count > 0 else {
    fail("\(corpusName): too short for --context \(options.context) with --val-fraction \(options.validationFraction): "
         + "\(trainTokens.count) training and \(validationTokens.count) validation tokens")
}

print("Corpus: \(corpusName), \(corpusText.unicodeScalars.count) characters")
print("Tokenizer: \(options.tokenizer), \(tokenizer.vocabularySize) tokens"
      + (options.tokenizer == "bpe" ? String(format: " (trained and applied in %.1f s)", tokenizerSeconds) : "")
      + "; \(trainTokens.count) training tokens, \(validationTokens.count) validation tokens")
print("Windows of \(options.context) tokens every \(options.stride ?? options.context): "
      + "\(split.train.count) for training, \(split.validation.count) for validation "
      + "(each evaluation uses \(options.evalWindows == 0 ? split.validation.count : min(options.evalWindows, split.validation.count)))")
print("\(options.threads) thread(s), seed \(options.seed), Adam lr \(options.learningRate)\n")

// MARK: - Memory

/// What training `preset` will hold at once, added up before the model exists
/// (MemoryBudget.swift): every parameter four times (value, gradient, Adam's m
/// and v), once more for the best weights kept in memory and once for the
/// checkpoint being written; one step's activations and their gradients; and
/// the text and its tokens. In Doubles, so no product of flags overflows.
func memoryEstimate(_ preset: Preset) -> (bytes: Double, parameters: Double, activations: Double) {
    let c = options.modelConfig(preset, vocabularySize: tokenizer.vocabularySize)
    let v = Double(c.vocabularySize), t = Double(c.contextLength), w = Double(c.width), h = Double(c.hidden)
    let e = Double(c.experts), k = Double(c.topK), s = Double(c.routing.sharedExperts), heads = Double(c.heads)
    let moeBlocks = Double(c.moeLayers.count), denseBlocks = Double(c.layers) - moeBlocks
    let mlp = 2 * w * h + h + w
    let attention = 4 * w * w + 4 * w + 4 * w                 // q, k, v, output projection; two LayerNorms
    let parameters = v * w + t * w + 2 * w + (c.tieWeights ? 0 : v * w) + Double(c.layers) * attention
        + denseBlocks * mlp + moeBlocks * ((e + s) * mlp + 2 * w * e + e)
    let tokens = Double(options.trainingConfig(preset).batchSize) * t
    let perToken = Double(c.layers) * (10 * w + 2 * heads * t) + denseBlocks * (2 * h + w)
        + moeBlocks * ((k + s) * (2 * w + 2 * h) + 3 * e) + 3 * v
    let activations = 2 * tokens * perToken * 4
    let data = Double(corpusText.utf8.count) + Double(trainTokens.count + validationTokens.count) * 8 * 2
    return (parameters * 28 + activations + data, parameters, activations)
}
for preset in options.command == "compare" ? Preset.all : [Preset.named(options.preset)!] {
    let need = memoryEstimate(preset)
    do {
        try MemoryBudget.check(need.bytes, what: "\(preset.name) (--width \(options.width) --layers \(options.layers) "
                                   + "--hidden \(options.hidden ?? 4 * options.width) --experts \(options.experts) --context \(options.context))",
                               breakdown: "\(MemoryBudget.formatCount(need.parameters)) parameters × 28 bytes for weights, gradients, "
                                   + "Adam's moments, the best weights and the checkpoint being written, "
                                   + "\(MemoryBudget.format(need.activations)) of activations for a step",
                               advice: "use a smaller --width, --layers, --hidden, --experts, --context or --batch-size")
    } catch {
        fail("\(error)", status: 2)
    }
}

// MARK: - Training

let outDirectory = URL(fileURLWithPath: options.out)
do {
    try FileManager.default.createDirectory(at: outDirectory, withIntermediateDirectories: true)
} catch {
    fail("\(outDirectory.path): cannot create folder: \(error.localizedDescription)")
}

/// Everything one trained model contributes to the tables, plots and summary.json.
struct ModelRun {
    let preset: Preset
    let model: GPT
    let trainer: LanguageModelTrainer
    let stopReason: LanguageModelTrainer.StopReason
    /// The best weights' loss on every validation window.
    let fullValidationLoss: Double
    /// Per MoE layer, routing of the best weights over every validation window.
    let validationRouting: [LayerRouting]
    let checkpoint: URL
    /// Median phase times from the interleaved timing rounds (compare only).
    var interleaved: StepTiming? = nil
}

func train(_ preset: Preset) -> ModelRun {
    var rng = Xoshiro256(seed: options.seed)
    let config = options.modelConfig(preset, vocabularySize: tokenizer.vocabularySize)
    let model = GPT(config: config, rng: &rng)
    let trainer = LanguageModelTrainer(model: model, train: split.train, validation: split.validation,
                                       config: options.trainingConfig(preset))
    let checkpoint = outDirectory.appendingPathComponent("\(preset.name).safetensors")
    let moe = config.moeLayers.isEmpty ? "dense" :
        "MoE in blocks \(config.moeLayers.map(String.init).joined(separator: ",")): \(config.experts) experts, \(config.layerRouting.summary)"
    print("\(preset.name): \(config.layers) blocks, width \(config.width), \(config.heads) heads, hidden \(config.hidden), "
          + "\(moe); \(RunReport.int(model.parameterCount)) parameters (\(RunReport.int(model.activeParameterCount)) active per token)")
    print("  \(counted(trainer.plannedSteps, "step")) of \(counted(trainer.config.batchSize, "window")) × \(options.context) tokens "
          + "(\(counted(trainer.stepsPerEpoch, "step")) per epoch), evaluation every \(trainer.config.evalInterval)")

    var bar: ProgressBar? = nil
    var barStart = 0
    let stop = trainer.run(onStep: { step, planned, loss, aux, _ in
        if bar == nil {
            barStart = step - 1
            bar = ProgressBar(title: "  steps \(step)-\(min(planned, barStart + trainer.config.evalInterval))",
                              total: min(planned, barStart + trainer.config.evalInterval) - barStart)
            bar?.reportsTenths = false
        }
        bar?.update(step - barStart, status: config.moeLayers.isEmpty ? String(format: "loss %.3f", loss)
                                                                     : String(format: "loss %.3f  α·aux %.4f", loss, aux))
    }, onEvaluation: { record, improved in
        if improved {
            do {
                try GPTCheckpoint.save(model, tokenizer: tokenizer, to: checkpoint,
                                       metadata: ["source": "gpt-moe", "preset": preset.name, "step": String(record.step),
                                                  "validation_loss": String(record.validationLoss), "seed": String(options.seed)])
            } catch {
                fail("\(error)")
            }
        }
        let line = RunReport.evaluationLine(record, improved: improved)
        if let b = bar { b.finish(status: line) } else { print("  step 0: " + line) }
        bar = nil
    })
    if stop == .nonFiniteLoss, let bad = trainer.nonFiniteLoss {
        bar?.finish(status: "stopped")
        fail("\(preset.name): the training loss became \(bad.loss) at epoch \(bad.epoch), step \(bad.step); stopped. "
             + (trainer.bestValidationLoss.isFinite
                ? "\(checkpoint.path) holds the best weights before it" : "nothing was written"))
    }
    if stop == .earlyStopped {
        print("  stopped early: no better validation loss in \(options.patience) evaluations")
    }
    // The best weights on every validation window: the loss, and what routing did there.
    trainer.restoreBestWeights()
    for (_, layer) in model.moeLayers { layer.resetStatistics() }
    let full = trainer.evaluate(windows: 0, keepingRoutingStatistics: true)
    let routing = trainer.currentRouting()
    for (_, layer) in model.moeLayers { layer.resetStatistics() }
    print(String(format: "  best validation loss %.4f at step %d; %.4f on all %d validation windows; %.1f s of training steps\n",
                 trainer.bestValidationLoss, trainer.bestStep, full, split.validation.count, trainer.totalTiming.total))
    do {
        try AtomicFile.write(Data(tokenizer.serialized().utf8),
                             to: outDirectory.appendingPathComponent("\(preset.name).tokenizer.json"))
    } catch {
        fail("\(error)")
    }
    return ModelRun(preset: preset, model: model, trainer: trainer, stopReason: stop, fullValidationLoss: full,
                    validationRouting: routing, checkpoint: checkpoint)
}

let presets = options.command == "compare" ? Preset.all : [Preset.named(options.preset)!]
var runs: [ModelRun] = []
for preset in presets { runs.append(train(preset)) }

// MARK: - Interleaved timing (compare)

// The presets train one after another, so on a shared machine one may have run
// while another process was busy and another while it was idle: their step
// times would compare the machine's load, not the models. So, after training,
// every model takes one step in turn, round after round, on the same windows,
// and each phase's median over the rounds is what the ratios use. The learning
// rate is 0 for these steps: the full computation runs, the weights stay.
if runs.count > 1 && options.timingRounds > 0 {
    print("Timing: \(options.timingRounds) rounds, one step of each model in turn (learning rate 0)")
    var samples = [[StepTiming]](repeating: [], count: runs.count)
    for round in 0...options.timingRounds {   // round 0 warms up and is not counted
        for (i, run) in runs.enumerated() {
            let (x, y) = split.train.batch(0..<min(split.train.count, run.trainer.config.batchSize))
            let rate = run.trainer.optimizer.learningRate
            run.trainer.optimizer.learningRate = 0
            let timing = run.trainer.trainStep(inputs: x, targets: y).timing
            run.trainer.optimizer.learningRate = rate
            if round > 0 { samples[i].append(timing) }
        }
    }
    for i in runs.indices {
        runs[i].interleaved = StepTiming.median(samples[i])
        for (_, layer) in runs[i].model.moeLayers { layer.resetStatistics() }
    }
}

// MARK: - Report

var report = RunReport(options: options, runs: runs, corpus: corpusName, vocabularySize: tokenizer.vocabularySize)
print(report.tables())

if options.command == "train", let run = runs.first {
    var rng = Xoshiro256(seed: options.seed ^ 0x5A3B_1E)
    let prompt = tokenizer.encode(options.prompt)
    let sample = options.prompt + tokenizer.decode(run.model.generate(prompt: prompt, count: options.length,
                                                                     temperature: options.temperature,
                                                                     topK: options.sampleTopK, rng: &rng))
    report.sample = sample
    print("Sample from the best checkpoint (temperature \(options.temperature)"
          + (options.sampleTopK > 0 ? ", top-\(options.sampleTopK)" : "") + "):\n")
    print(sample)
    print("")
}
do {
    try report.write(to: outDirectory)
} catch {
    fail("\(error)")
}
print("Wrote \(outDirectory.path)/: summary.json, \(report.plotNames.joined(separator: ", ")), "
      + runs.map { "\($0.preset.name).safetensors" }.joined(separator: ", "))
