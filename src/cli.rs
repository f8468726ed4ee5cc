//! Command-line interface: one subcommand per job of the binary.
//!
//! Each subcommand has an `Args` struct and a function that writes to the given output, so tests
//! capture what it prints and the exit code without starting a process.

use std::io::{self, Write};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use winipam::ipam::capacity::{self, ADDRESSES_PER_PREFIX, TableRow};
use winipam::ipam::max_pods::kubelet_max_pods;
use winipam::ipam::{Mode, PodCapacity};

#[derive(Debug, Parser)]
#[command(
    name = "winipam",
    version,
    about = "Pod IPv4 address management for Windows nodes on AWS"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controller (in the cluster, or against KUBECONFIG).
    Run(Box<winipam::run::RunArgs>),
    /// Print how many pod IPs an instance type gives (offline, from the embedded EC2 table).
    Capacity(CapacityArgs),
    /// Print the NodeAddressPool CustomResourceDefinition (YAML).
    Crd,
    /// Run the controller against a simulated cluster and EC2 (virtual time) and print what it
    /// measured, side by side with a model of the VPC Resource Controller.
    Simulate(winipam::sim::cli::SimulateArgs),
    /// The driver and watcher of the real-apiserver scale harness (scripts/scale.sh).
    #[command(hide = true)]
    ScaleProbe(winipam::scale::ScaleProbeArgs),
}

#[derive(Debug, Args)]
pub struct CapacityArgs {
    /// EC2 instance type, e.g. m5.large.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub instance_type: Option<String>,
    /// Capacity with /28 prefix delegation (Nitro instances only).
    #[arg(long)]
    pub prefix_delegation: bool,
    /// Print only the number (for scripts).
    #[arg(long, short)]
    pub quiet: bool,
    /// Print a table of every known instance type.
    #[arg(long)]
    pub all: bool,
    /// Print the kubelet --max-pods value to set on Windows nodes of this type: the lower of
    /// the pod IPs (of the primary ENI: Windows pods get no address from other ENIs) and the
    /// kubelet's default of 110 pods, the per-node limit Kubernetes is tested at. It is not EKS's
    /// Linux formula ENIs * (IPs per ENI - 1) + 2, which counts every ENI and two host-network
    /// pods (aws-node, kube-proxy) Windows nodes do not run. Above the IP capacity the scheduler
    /// places pods that can never get an address; below it addresses stay unused. Add the
    /// host-network (HostProcess) pods you run per node: they count against max-pods but take
    /// no address.
    #[arg(long, conflicts_with = "all")]
    pub max_pods: bool,
}

/// Exit code for an instance type that is not in the table.
pub const EXIT_UNKNOWN_TYPE: u8 = 2;

pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Run(args) => run_controller(*args),
        Command::Crd => match winipam::crd::crd_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("error: cannot render the CRD: {err}");
                ExitCode::FAILURE
            }
        },
        Command::Simulate(args) => ExitCode::from(winipam::sim::cli::simulate(
            &args,
            true,
            &mut io::stdout().lock(),
            &mut io::stderr().lock(),
        )),
        Command::ScaleProbe(args) => scale_probe(args),
        Command::Capacity(args) => {
            let code = capacity_command(&args, &mut io::stdout().lock(), &mut io::stderr().lock());
            ExitCode::from(code)
        }
    }
}

/// `winipam run`: the controller until SIGTERM.
fn run_controller(args: winipam::run::RunArgs) -> ExitCode {
    let threads = args.worker_threads.map(usize::from);
    block_on(threads, winipam::run::process::run(args))
}

/// `winipam scale-probe`: one scale run against KUBECONFIG's cluster.
fn scale_probe(args: winipam::scale::ScaleProbeArgs) -> ExitCode {
    block_on(None, winipam::scale::run(args))
}

/// Runs an async command on a multi-threaded runtime of `threads` workers (default: tokio's,
/// one per CPU the process may use); its error is printed.
///
/// The command runs as a task of the runtime's workers, not on the thread that called
/// `block_on`: that thread is not a worker, so everything the command polls itself (the
/// controller's watches and dispatcher) would be woken across threads on every event, a futex
/// wake and a context switch each (#18: a fifth of the controller's CPU in a profile of R2).
fn block_on<E: std::fmt::Display + Send + 'static>(
    threads: Option<usize>,
    command: impl std::future::Future<Output = Result<(), E>> + Send + 'static,
) -> ExitCode {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = threads {
        builder.worker_threads(threads);
    }
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(runtime.spawn(command)) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(err)) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

/// `winipam capacity`: returns the process exit code.
pub fn capacity_command(args: &CapacityArgs, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let result = match (&args.instance_type, args.all) {
        (_, true) => print_table(out),
        (Some(name), false) => return print_one(name, args, out, err),
        (None, false) => writeln!(err, "error: name an instance type, or use --all"),
    };
    match result {
        Ok(()) => 0,
        // stdout closed early (e.g. `| head`): nothing useful left to say.
        Err(_) => 1,
    }
}

fn print_one(name: &str, args: &CapacityArgs, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let wanted = name.trim().to_ascii_lowercase();
    let Some(limits) = capacity::lookup(&wanted) else {
        let suggestions = capacity::suggest(&wanted, 3);
        let hint = if suggestions.is_empty() {
            String::new()
        } else {
            format!("; did you mean {}?", suggestions.join(", "))
        };
        // Best effort: if stderr is gone there is nobody to tell.
        let _ = writeln!(
            err,
            "error: unknown instance type {name:?} (not among the {} types of the embedded EC2 table){hint}",
            capacity::table().len()
        );
        return EXIT_UNKNOWN_TYPE;
    };
    let requested = if args.prefix_delegation {
        Mode::Prefix
    } else {
        Mode::Secondary
    };
    let cap = capacity::pod_capacity(&limits, requested);
    let written = match (args.max_pods, args.quiet) {
        (true, true) => writeln!(out, "{}", kubelet_max_pods(cap.pods)),
        (true, false) => writeln!(out, "{}", describe_max_pods(&wanted, cap)),
        (false, true) => writeln!(out, "{}", cap.pods),
        (false, false) => writeln!(out, "{}", describe(&wanted, limits.ipv4_per_interface, cap)),
    };
    if written.is_err() { 1 } else { 0 }
}

/// The one-line answer, e.g. `m5.large: 9 pod IPs (secondary IPv4, 10 per ENI)`.
fn describe(name: &str, ipv4_per_interface: u32, cap: PodCapacity) -> String {
    let slots = ipv4_per_interface.saturating_sub(1);
    match cap.mode {
        Mode::Prefix => format!(
            "{name}: {} pod IPs (prefix delegation, {slots} /28 prefixes of {ADDRESSES_PER_PREFIX})",
            cap.pods
        ),
        Mode::Secondary if cap.downgraded() => format!(
            "{name}: {} pod IPs (secondary IPv4, {ipv4_per_interface} per ENI; prefix delegation is Nitro-only and {name} is not Nitro)",
            cap.pods
        ),
        Mode::Secondary => format!(
            "{name}: {} pod IPs (secondary IPv4, {ipv4_per_interface} per ENI)",
            cap.pods
        ),
    }
}

/// The `--max-pods` answer, e.g. `m5.large: --max-pods=9 (9 pod IPs, secondary IPv4)`.
fn describe_max_pods(name: &str, cap: PodCapacity) -> String {
    let value = kubelet_max_pods(cap.pods);
    let mode = match cap.mode {
        Mode::Prefix => "prefix delegation",
        Mode::Secondary => "secondary IPv4",
    };
    if value < cap.pods {
        format!(
            "{name}: --max-pods={value} (the kubelet's default; {} pod IPs with {mode}, \
             more pods than Kubernetes tests per node)",
            cap.pods
        )
    } else {
        format!("{name}: --max-pods={value} ({} pod IPs, {mode})", cap.pods)
    }
}

fn print_table(out: &mut dyn Write) -> io::Result<()> {
    let rows = capacity::table();
    let width = rows
        .iter()
        .map(|r| r.instance_type.len())
        .max()
        .unwrap_or(4)
        .max("TYPE".len());
    writeln!(
        out,
        "{:<width$}  {:>8}  {:>5}  {:>9}  {:>6}",
        "TYPE", "ENI_IPV4", "NITRO", "SECONDARY", "PREFIX"
    )?;
    for row in rows {
        writeln!(out, "{}", table_line(row, width))?;
    }
    Ok(())
}

fn table_line(row: &TableRow, width: usize) -> String {
    let limits = row.limits();
    let secondary = capacity::pod_capacity(&limits, Mode::Secondary).pods;
    let prefix = capacity::pod_capacity(&limits, Mode::Prefix);
    let prefix = if prefix.downgraded() {
        "-".to_string()
    } else {
        prefix.pods.to_string()
    };
    format!(
        "{:<width$}  {:>8}  {:>5}  {:>9}  {:>6}",
        row.instance_type,
        row.ipv4_per_interface,
        if limits.nitro { "yes" } else { "no" },
        secondary,
        prefix
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use winipam::ipam::max_pods::KUBELET_DEFAULT_MAX_PODS;

    /// Runs the command line `argv` (without the program name): (exit code, stdout, stderr).
    fn run_args(argv: &[&str]) -> (u8, String, String) {
        let cli = Cli::try_parse_from(std::iter::once("winipam").chain(argv.iter().copied()))
            .expect("valid command line");
        let Command::Capacity(args) = cli.command else {
            panic!("not a capacity command line: {argv:?}");
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = capacity_command(&args, &mut out, &mut err);
        (
            code,
            String::from_utf8(out).expect("utf-8"),
            String::from_utf8(err).expect("utf-8"),
        )
    }

    #[test]
    fn spec_examples() {
        for (name, secondary, prefix) in [
            ("m5.large", 9, 144),
            ("c5.xlarge", 14, 224),
            ("t3.micro", 1, 16),
        ] {
            let (code, out, _) = run_args(&["capacity", name, "--quiet"]);
            assert_eq!((code, out), (0, format!("{secondary}\n")), "{name}");
            let (code, out, _) = run_args(&["capacity", name, "--prefix-delegation", "-q"]);
            assert_eq!((code, out), (0, format!("{prefix}\n")), "{name}");
        }
    }

    #[test]
    fn one_line_answers() {
        let (code, out, err) = run_args(&["capacity", "m5.large"]);
        assert_eq!(code, 0);
        assert_eq!(out, "m5.large: 9 pod IPs (secondary IPv4, 10 per ENI)\n");
        assert!(err.is_empty());
        let (_, out, _) = run_args(&["capacity", "M5.Large", "--prefix-delegation"]);
        assert_eq!(
            out,
            "m5.large: 144 pod IPs (prefix delegation, 9 /28 prefixes of 16)\n"
        );
    }

    #[test]
    fn non_nitro_prefix_request_says_why_and_gives_secondary() {
        let (code, out, _) = run_args(&["capacity", "m4.large", "--prefix-delegation"]);
        assert_eq!(code, 0);
        assert!(
            out.starts_with("m4.large: 9 pod IPs (secondary IPv4"),
            "{out}"
        );
        assert!(out.contains("Nitro-only"), "{out}");
        let (_, out, _) = run_args(&["capacity", "m4.large", "--prefix-delegation", "-q"]);
        assert_eq!(out, "9\n");
    }

    #[test]
    fn unknown_type_exits_2_with_suggestions() {
        let (code, out, err) = run_args(&["capacity", "m5.larg"]);
        assert_eq!(code, EXIT_UNKNOWN_TYPE);
        assert!(out.is_empty());
        assert!(err.contains("unknown instance type \"m5.larg\""), "{err}");
        assert!(err.contains("did you mean m5.large"), "{err}");
    }

    #[test]
    fn all_prints_every_type() {
        let (code, out, _) = run_args(&["capacity", "--all"]);
        assert_eq!(code, 0);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 1 + 1164);
        assert!(lines[0].starts_with("TYPE"));
        let m4 = lines
            .iter()
            .find(|l| l.starts_with("m4.large "))
            .expect("m4.large row");
        assert_eq!(
            m4.split_whitespace().collect::<Vec<_>>(),
            ["m4.large", "10", "no", "9", "-"]
        );
        let m5 = lines
            .iter()
            .find(|l| l.starts_with("m5.large "))
            .expect("m5.large row");
        assert_eq!(
            m5.split_whitespace().collect::<Vec<_>>(),
            ["m5.large", "10", "yes", "9", "144"]
        );
    }

    #[test]
    fn max_pods_is_the_ip_capacity_up_to_the_kubelet_default() {
        for (argv, expected) in [
            (&["m5.large"][..], 9),
            (&["m5.large", "--prefix-delegation"][..], 110),
            (&["t3.micro"][..], 1),
            (&["t3.micro", "--prefix-delegation"][..], 16),
            (&["c5.xlarge", "--prefix-delegation"][..], 110),
            // 50 IPv4 per ENI: the largest secondary capacity stays below 110.
            (&["m5.24xlarge"][..], 49),
            // Not Nitro: prefix delegation is refused, the secondary capacity counts.
            (&["m4.large", "--prefix-delegation"][..], 9),
        ] {
            let mut args = vec!["capacity", "--max-pods", "-q"];
            args.extend_from_slice(argv);
            let (code, out, _) = run_args(&args);
            assert_eq!((code, out), (0, format!("{expected}\n")), "{argv:?}");
        }
        // Never more than the addresses, never more than 110, for every known type.
        for row in capacity::table() {
            for mode in [Mode::Secondary, Mode::Prefix] {
                let ips = capacity::pod_capacity(&row.limits(), mode).pods;
                let value = kubelet_max_pods(ips);
                assert!(value <= ips && value <= KUBELET_DEFAULT_MAX_PODS);
                assert!(value == ips || value == KUBELET_DEFAULT_MAX_PODS);
            }
        }
    }

    #[test]
    fn max_pods_says_where_the_value_comes_from() {
        let (code, out, _) = run_args(&["capacity", "m5.large", "--max-pods"]);
        assert_eq!(code, 0);
        assert_eq!(out, "m5.large: --max-pods=9 (9 pod IPs, secondary IPv4)\n");
        let (_, out, _) = run_args(&["capacity", "m5.large", "--max-pods", "--prefix-delegation"]);
        assert_eq!(
            out,
            "m5.large: --max-pods=110 (the kubelet's default; 144 pod IPs with prefix delegation, \
             more pods than Kubernetes tests per node)\n"
        );
        let argv =
            |a: &[&str]| Cli::try_parse_from(std::iter::once("winipam").chain(a.iter().copied()));
        assert!(argv(&["capacity", "--all", "--max-pods"]).is_err());
        let (code, _, err) = run_args(&["capacity", "m5.larg", "--max-pods"]);
        assert_eq!(code, EXIT_UNKNOWN_TYPE);
        assert!(err.contains("did you mean m5.large"), "{err}");
    }

    #[test]
    fn type_or_all_is_required_not_both() {
        let argv =
            |a: &[&str]| Cli::try_parse_from(std::iter::once("winipam").chain(a.iter().copied()));
        assert!(argv(&["capacity"]).is_err());
        assert!(argv(&["capacity", "m5.large", "--all"]).is_err());
    }
}
