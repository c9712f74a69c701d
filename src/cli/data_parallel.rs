//! `diffuse train --gpus ...` (and `--nodes/--node-rank/--rendezvous`):
//! which devices the run trains on, and the communicator that joins them.
//! One GPU (or no `--gpus`) trains as always; several CUDA GPUs need NCCL;
//! `--device emu --gpus 0,1,...` is that many emulated devices joined by
//! the in-process communicator (tests, CI).

use super::device::DeviceSpec;
use anyhow::{bail, Context, Result};
use diffuse_tensor::comm::{nccl, rendezvous, Communicator};
use diffuse_tensor::{gpu, Device};
use diffuse_trainer::data_parallel::{local_ranks, RankSetup};
use std::sync::Arc;
use std::time::Duration;

/// The devices of a run.
pub enum Devices {
    One(Device),
    /// This process's ranks of a data-parallel group, and a line for the log.
    Group {
        ranks: Vec<RankSetup>,
        describe: String,
    },
}

/// Where the several machines meet.
pub struct MultiNode {
    pub nodes: usize,
    pub node_rank: usize,
    pub rendezvous: Option<String>,
}

/// `--gpus` as written: all, or distinct device numbers.
fn parse_gpus(spec: &str) -> Result<Option<Vec<usize>>> {
    if spec.trim() == "all" {
        return Ok(None);
    }
    let mut ids = Vec::new();
    for part in spec.split(',') {
        let n: usize = part
            .trim()
            .parse()
            .with_context(|| format!("--gpus {spec}: {part:?} is not a device number (write all, or e.g. 0,1,3)"))?;
        if ids.contains(&n) {
            bail!("--gpus {spec}: device {n} is named twice");
        }
        ids.push(n);
    }
    Ok(Some(ids))
}

fn timeout_from_env(var: &str, default_s: u64) -> Duration {
    let s = std::env::var(var).ok().and_then(|v| v.trim().parse::<u64>().ok()).filter(|&s| s > 0);
    Duration::from_secs(s.unwrap_or(default_s))
}

pub fn open(device: DeviceSpec, gpus: Option<&str>, multi: &MultiNode) -> Result<Devices> {
    let Some(spec) = gpus else {
        if multi.nodes > 1 {
            bail!("--nodes {} needs --gpus (the GPUs each node trains on)", multi.nodes);
        }
        return Ok(Devices::One(device.open()?));
    };
    if multi.nodes == 0 || multi.node_rank >= multi.nodes {
        bail!("--node-rank {} is not one of the {} node(s) (0 to nodes - 1)", multi.node_rank, multi.nodes);
    }
    let ids = parse_gpus(spec)?;
    match device {
        DeviceSpec::Cpu => bail!("--gpus trains on GPUs: leave out --device cpu (or --gpus, to train on the CPU)"),
        DeviceSpec::Cuda(_) => bail!("--gpus names the GPUs: leave out --device cuda:N"),
        DeviceSpec::Emu => {
            let Some(ids) = ids else {
                bail!("--device emu --gpus all: name the emulated devices, e.g. --gpus 0,1");
            };
            if multi.nodes > 1 {
                bail!("--nodes needs NCCL and CUDA GPUs: the emulator's devices live in one process");
            }
            let devices = ids.iter().map(|_| gpu::emu::emu_device()).collect::<diffuse_tensor::Result<Vec<_>>>()?;
            if devices.len() == 1 {
                return Ok(Devices::One(devices.into_iter().next().context("one device")?));
            }
            let describe = format!("{} emulated devices, in-process all-reduce", devices.len());
            Ok(Devices::Group { ranks: local_ranks(devices), describe })
        }
        DeviceSpec::Auto => cuda_group(spec, ids, multi),
    }
}

fn cuda_group(spec: &str, ids: Option<Vec<usize>>, multi: &MultiNode) -> Result<Devices> {
    let ids = match ids {
        Some(ids) => ids,
        None => {
            let n = gpu::cuda::cuda_device_count().with_context(|| format!("--gpus {spec}"))?;
            if n == 0 {
                bail!("--gpus all: the CUDA driver found no GPU");
            }
            (0..n).collect()
        }
    };
    if ids.len() == 1 && multi.nodes == 1 {
        return Ok(Devices::One(gpu::cuda::cuda_device(ids[0])?));
    }
    let world = ids.len() * multi.nodes;
    // Say everything that is missing at once: the driver, the GPUs, NCCL.
    let mut missing = Vec::new();
    match gpu::cuda::cuda_device_count() {
        Err(e) => missing.push(e.to_string()),
        Ok(n) => {
            if let Some(bad) = ids.iter().find(|&&i| i >= n) {
                missing.push(format!("GPU {bad} (this machine has {n})"));
            }
        }
    }
    if let Err(e) = nccl::nccl_version() {
        missing.push(e.to_string());
    }
    if !missing.is_empty() {
        bail!("--gpus {spec}: training on {world} GPUs needs CUDA GPUs and NCCL; missing: {}", missing.join("; "));
    }
    let devices = ids.iter().map(|&i| gpu::cuda::cuda_device(i)).collect::<diffuse_tensor::Result<Vec<_>>>()?;
    let id = if multi.nodes == 1 {
        nccl::unique_id()?
    } else {
        let addr =
            multi.rendezvous.as_deref().context("--nodes > 1 needs --rendezvous HOST:PORT (node 0's address)")?;
        let timeout = timeout_from_env("DIFFUSE_RENDEZVOUS_TIMEOUT_S", 300);
        if multi.node_rank == 0 {
            let id = nccl::unique_id()?;
            rendezvous::serve(addr, multi.nodes, &id, timeout)?;
            id
        } else {
            let bytes = rendezvous::join(addr, multi.node_rank, multi.nodes, timeout)?;
            bytes.try_into().map_err(|_| anyhow::anyhow!("rendezvous: rank 0 sent an id of the wrong length"))?
        }
    };
    // Every local communicator is built here, in one NCCL group, before the
    // worker threads start: a failure reaches all local ranks at once.
    let local = Arc::new(nccl::LocalComms::default());
    let mut members = Vec::with_capacity(devices.len());
    for (i, device) in devices.iter().enumerate() {
        let Device::Gpu(g) = device else { bail!("--gpus: device {i} is not a GPU") };
        members.push((g.clone(), multi.node_rank * ids.len() + i));
    }
    let comms = nccl::NcclComm::new_local_group(&members, world, &id, local)
        .with_context(|| format!("setting up NCCL for {world} ranks"))?;
    let ranks = devices
        .into_iter()
        .zip(comms)
        .zip(members.iter().map(|&(_, rank)| rank))
        .map(|((device, comm), rank)| {
            let comm: diffuse_trainer::data_parallel::CommFactory =
                Box::new(move || Ok(Arc::new(comm) as Arc<dyn Communicator>));
            RankSetup { rank, device, comm }
        })
        .collect();
    let describe =
        format!("{} GPU(s) on node {} of {}, {world} ranks, NCCL all-reduce", ids.len(), multi.node_rank, multi.nodes);
    Ok(Devices::Group { ranks, describe })
}

#[cfg(test)]
mod tests {
    use super::parse_gpus;

    #[test]
    fn gpus_lists_parse_and_bad_ones_are_refused() {
        assert_eq!(parse_gpus("all").expect("all"), None);
        assert_eq!(parse_gpus("0,1,3").expect("list"), Some(vec![0, 1, 3]));
        assert!(parse_gpus("0,x").is_err());
        assert!(parse_gpus("1,1").is_err());
    }
}
