// Command-line options of mnist-moe: every default is the walkthrough's setup
// (Part 3: 5,000 training images, 30 epochs, Adam 1e-3, batch 64, α 0.1,
// 8 experts, top-2, width 256, expert hidden 128, seed 0).
//
// The run these options describe: Notebooks/part3-mnist.md, §1.
import Foundation
import MoE

struct Options {
    var command = "train"          // train | ablate
    var trainSize = 5_000          // the walkthrough's training subset
    var epochs = 30
    var batchSize = 64
    var learningRate: Float = 1e-3
    var experts = 8
    /// Router, balancing, capacity, shared experts: the walkthrough's by default.
    var routing = RoutingSetup()
    var auxWeight: Float {          // α; 0 shows what happens without balancing
        get { routing.auxWeight }
        set { routing.auxWeight = newValue }
    }
    var topK: Int {
        get { routing.router == "switch" ? 1 : routing.k }
        set { routing.k = newValue }
    }
    var hidden = 256               // model width D
    var expertHidden = 128         // hidden width of each expert (and of the dense FFN)
    var model = "both"             // moe | dense | both
    var seed: UInt64 = 0
    var threads = ProcessInfo.processInfo.activeProcessorCount
    var dataDir: String? = nil
    var out: String? = nil         // default runs/mnist-moe (runs/mnist-moe-ablate for ablate)
    var initFrom: String? = nil    // start from these weights
    var resume: String? = nil      // continue a run from a .resume.safetensors file
    var shuffle = true
    var download = true
    var help = false

    static let usage = """
    usage: mnist-moe [options]
           mnist-moe ablate [options]

    Trains the walkthrough's MoE classifier (8 experts, top-2) and its dense baseline on
    MNIST and prints the tables of Part 3 from this run. Defaults reproduce the walkthrough.
    `ablate` trains the MoE once per routing/balancing configuration of a preset list
    (same seed, data and epochs; the routing options below are ignored) and prints one
    row per configuration; results go to runs/mnist-moe-ablate unless --out says otherwise.

      --train-size N     training images, the first N of 60,000 (default 5000)
      --epochs N         passes over the training images (default 30)
      --batch-size N     images per Adam step (default 64)
      --lr X             Adam learning rate (default 0.001)
      --experts N        experts in the MoE layer (default 8)
      --hidden N         model width D (default 256)
      --expert-hidden N  hidden width of each expert and of the dense FFN (default 128)
      --model M          moe, dense or both (default both)
      --seed N           seed for weights and data order (default 0)
      --threads N        threads for the compute kernels (default: all cores)
      --data-dir DIR     MNIST folder (default: $MNIST_DIR, else ./data/mnist);
                         missing files are downloaded there, from the mirrors in
                         $MNIST_MIRRORS (comma-separated base URLs) if set
      --no-download      fail instead of downloading missing files
      --out DIR          where summary.json, plots and checkpoints go (default runs/mnist-moe)
      --init FILE        start from the weights in FILE (a .safetensors checkpoint)
      --resume FILE      continue the run saved in FILE (a .resume.safetensors checkpoint)
      --no-shuffle       keep the training images in file order
      -h, --help         this text

    Routing and balancing (Sources/MoE/MoE/RoutingFlags.swift; `ablate` ignores these):
    \(RoutingFlags.usage())
    """

    /// Parses the arguments; throws a one-line message on anything wrong.
    static func parse(_ arguments: [String]) throws -> Options {
        var o = Options()
        var args = ArgumentReader(arguments)
        var routingFlags = RoutingFlags()
        while let flag = args.next() {
            switch flag {
            case "ablate": o.command = "ablate"   // the subcommand, usually first
            case "--train-size": o.trainSize = try args.int(flag, 1...60_000)
            case "--epochs": o.epochs = try args.int(flag, 0...10_000)
            case "--batch-size": o.batchSize = try args.int(flag, 1...60_000)
            case "--lr": o.learningRate = try args.float(flag, 1e-8...10)
            case "--experts": o.experts = try args.int(flag, 1...1024)
            case "--hidden": o.hidden = try args.int(flag, 1...65_536)
            case "--expert-hidden": o.expertHidden = try args.int(flag, 1...65_536)
            case "--model":
                o.model = try args.value(flag)
                guard ["moe", "dense", "both"].contains(o.model) else {
                    throw UsageError("--model must be moe, dense or both, got '\(o.model)'")
                }
            case "--seed":
                let text = try args.value(flag)
                guard let s = UInt64(text) else { throw UsageError("--seed must be a non-negative integer, got '\(text)'") }
                o.seed = s
            case "--threads": o.threads = try args.int(flag, 1...256)
            case "--data-dir": o.dataDir = try args.value(flag)
            case "--out": o.out = try args.value(flag)
            case "--init": o.initFrom = try args.value(flag)
            case "--resume": o.resume = try args.value(flag)
            case "--no-shuffle": o.shuffle = false
            case "--no-download": o.download = false
            case "-h", "--help": o.help = true
            default:
                guard try routingFlags.parse(flag, from: &args) else {
                    throw UsageError.unknownOption(flag, known: flags(inUsage: usage) + ["ablate"])
                }
            }
        }
        routingFlags.finish()
        o.routing = routingFlags.applied(to: o.routing)
        guard o.topK <= o.experts else {
            throw UsageError("--top-k \(o.topK) is more than --experts \(o.experts)")
        }
        do { try o.routing.validate(experts: o.experts) } catch { throw UsageError("\(error)") }
        // A registered router reports its own k (a top-1 one: 1, whatever --top-k said).
        o.routing = o.routing.resolvingRegisteredRouter(experts: o.experts, modelDim: o.hidden)
        if o.resume != nil && (o.routing.router == "noisy" || o.routing.expertDropout > 0) {
            throw UsageError("--resume cannot continue --router noisy or --expert-dropout exactly: their random draws are not saved in checkpoints")
        }
        if o.command == "ablate" && (o.resume != nil || o.initFrom != nil) {
            throw UsageError("ablate trains every configuration from scratch: --init and --resume do not apply")
        }
        guard o.resume == nil || o.initFrom == nil else {
            throw UsageError("--init and --resume cannot be used together")
        }
        if o.resume != nil && o.model == "both" {
            throw UsageError("--resume continues one model: add --model moe or --model dense")
        }
        return o
    }

    var outDirectory: String { out ?? (command == "ablate" ? "runs/mnist-moe-ablate" : "runs/mnist-moe") }

    /// The configuration as it goes into summary.json.
    var json: [String: Any] {
        ["train_size": trainSize, "test_size": 10_000, "epochs": epochs, "batch_size": batchSize,
         // Through their decimal text, so 0.1 is written 0.1, not 0.10000000149011612.
         "lr": Double("\(learningRate)")!, "aux_weight": Double("\(auxWeight)")!, "experts": experts, "top_k": topK,
         "routing": routing.json,
         "hidden": hidden, "expert_hidden": expertHidden, "model": model, "seed": seed, "threads": threads,
         "shuffle": shuffle, "optimizer": "adam", "pixels_scaled_to": "[0,1]"]
    }
}

