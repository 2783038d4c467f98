//! Steering: making the packets of a flow group arrive at the instance that owns it.
//!
//! Instance `i` receives on queue `i`. Three mechanisms exist (DESIGN.md "Flow-group
//! balancing"); this module holds two of them behind the [`Steering`] trait:
//! - [`RetaSteering`] rewrites the 82599's RSS redirection table (datasheet §7.1.2.8.3,
//!   RETA registers §8.2.3.7.16): 128 entries of 4 bits, so RSS reaches queues 0–15 only
//!   and at most 128 groups can be told apart.
//! - [`SoftwareSteering`] keeps the owner table in memory and hands every change to a
//!   publisher (the control segment, where instances read it); an instance that receives a
//!   packet of a group it does not own forwards it to the owner. It works on any NIC and
//!   with up to 4096 groups.
//!
//! Flow Director perfect filters (§7.1.2.7) reach all 128 queues but match single flows,
//! not hash buckets; they are not a [`Steering`] implementation.

use std::fmt;

use ixgbe_user::IxgbeError;
use ixgbe_user::ixgbe::DeviceControl;
use ixgbe_user::ixgbe::regs::{RETA_ENTRIES, RSS_MAX_QUEUES};

use crate::flowgroup::{FlowGroupError, FlowGroupTable};

/// Why a steering change was refused or failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum SteeringError {
    /// The group number is not below the mechanism's group count.
    GroupOutOfRange {
        /// The group asked for.
        group: u32,
        /// Groups this steering distinguishes.
        groups: u32,
    },
    /// The mechanism cannot deliver packets to this instance's queue (RSS on the 82599
    /// reaches queues 0–15 only: use Flow Director or software steering for more).
    InstanceUnreachable {
        /// The instance asked for.
        instance: u16,
        /// Instances `0..reachable` can be reached.
        reachable: u16,
    },
    /// The mechanism cannot tell this many groups apart (the RETA has 128 entries: use
    /// software steering for more).
    TooManyGroups {
        /// Groups asked for.
        groups: u32,
        /// The most this mechanism supports.
        max: u32,
    },
    /// The device refused the register update.
    Device(IxgbeError),
}

impl fmt::Display for SteeringError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SteeringError::GroupOutOfRange { group, groups } => {
                write!(f, "flow group {group} out of range (steering has {groups})")
            }
            SteeringError::InstanceUnreachable { instance, reachable } => write!(
                f,
                "instance {instance} cannot be reached by this steering (only 0..{reachable}); \
                 use Flow Director or software steering"
            ),
            SteeringError::TooManyGroups { groups, max } => write!(
                f,
                "{groups} flow groups exceed this steering's {max}; use software steering"
            ),
            SteeringError::Device(e) => write!(f, "steering update failed: {e}"),
        }
    }
}

impl std::error::Error for SteeringError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SteeringError::Device(e) => Some(e),
            _ => None,
        }
    }
}

impl From<IxgbeError> for SteeringError {
    fn from(e: IxgbeError) -> Self {
        SteeringError::Device(e)
    }
}

/// A mechanism that sends each flow group's packets to its owner instance.
pub trait Steering: Send {
    /// Sends `group`'s packets to `instance` from now on. Packets already queued stay
    /// where they are (the live-migration protocol forwards those stragglers).
    fn set_owner(&mut self, group: u32, instance: u16) -> Result<(), SteeringError>;

    /// A short name for statistics and logs ("reta", "software").
    fn kind(&self) -> &'static str;

    /// The largest flow-group count this mechanism can steer.
    fn max_groups(&self) -> u32;

    /// Applies a whole owner table, group by group (start-up, or recovery after the
    /// steering state was lost). Stops at the first failure.
    fn apply_table(&mut self, table: &FlowGroupTable) -> Result<(), SteeringError> {
        if table.groups() > self.max_groups() {
            return Err(SteeringError::TooManyGroups {
                groups: table.groups(),
                max: self.max_groups(),
            });
        }
        for (group, &owner) in (0u32..).zip(table.owners()) {
            self.set_owner(group, owner)?;
        }
        Ok(())
    }
}

/// Steering by the 82599's RSS redirection table.
///
/// With fewer than 128 groups, group `g` covers every RETA entry whose index has `g` in
/// its low bits (the NIC always indexes the RETA with 7 hash bits), so all of them are
/// rewritten together.
#[derive(Debug)]
pub struct RetaSteering {
    control: DeviceControl,
    groups: u32,
}

impl RetaSteering {
    /// RETA entries, hence the largest group count RETA steering supports.
    pub const MAX_GROUPS: u32 = RETA_ENTRIES as u32;

    /// Steering for `groups` flow groups (a power of two up to 128) over `control`'s
    /// device. The RETA is left as it is until [`Steering::set_owner`] or
    /// [`Steering::apply_table`] is called.
    pub fn new(control: DeviceControl, groups: u32) -> Result<Self, SteeringError> {
        if !groups.is_power_of_two() || groups > Self::MAX_GROUPS {
            return Err(SteeringError::TooManyGroups { groups, max: Self::MAX_GROUPS });
        }
        Ok(RetaSteering { control, groups })
    }

    /// The instance the RETA currently sends `group` to (read back from the device, first
    /// entry of the group).
    pub fn owner(&self, group: u32) -> Result<u16, SteeringError> {
        self.check_group(group)?;
        Ok(self.control.reta_entry(group as usize)?)
    }

    fn check_group(&self, group: u32) -> Result<(), SteeringError> {
        if group >= self.groups {
            return Err(SteeringError::GroupOutOfRange { group, groups: self.groups });
        }
        Ok(())
    }
}

impl Steering for RetaSteering {
    fn set_owner(&mut self, group: u32, instance: u16) -> Result<(), SteeringError> {
        self.check_group(group)?;
        if instance >= RSS_MAX_QUEUES {
            return Err(SteeringError::InstanceUnreachable { instance, reachable: RSS_MAX_QUEUES });
        }
        let stride = self.groups as usize;
        for index in (group as usize..RETA_ENTRIES).step_by(stride) {
            self.control.set_reta_entry(index, instance)?;
        }
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "reta"
    }

    fn max_groups(&self) -> u32 {
        Self::MAX_GROUPS
    }
}

/// Called with `(group, new owner)` after every change a [`SoftwareSteering`] accepts.
pub type PublishOwner = Box<dyn FnMut(u32, u16) + Send>;

/// Steering in software: the owner table lives in memory and each change is handed to a
/// publisher, which makes it visible to the instances (they forward packets of groups
/// they do not own).
pub struct SoftwareSteering {
    table: FlowGroupTable,
    publish: PublishOwner,
}

impl fmt::Debug for SoftwareSteering {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SoftwareSteering").field("table", &self.table).finish_non_exhaustive()
    }
}

impl SoftwareSteering {
    /// Software steering starting from `table`, reporting changes to `publish`. The
    /// initial table is not published: the caller already has it.
    pub fn new(table: FlowGroupTable, publish: impl FnMut(u32, u16) + Send + 'static) -> Self {
        SoftwareSteering { table, publish: Box::new(publish) }
    }

    /// The current owner table.
    pub fn table(&self) -> &FlowGroupTable {
        &self.table
    }
}

impl Steering for SoftwareSteering {
    fn set_owner(&mut self, group: u32, instance: u16) -> Result<(), SteeringError> {
        match self.table.set_owner(group, instance) {
            Ok(_) => {
                (self.publish)(group, instance);
                Ok(())
            }
            Err(FlowGroupError::InstanceOutOfRange { instance, instances }) => {
                Err(SteeringError::InstanceUnreachable { instance, reachable: instances })
            }
            Err(_) => Err(SteeringError::GroupOutOfRange { group, groups: self.table.groups() }),
        }
    }

    fn kind(&self) -> &'static str {
        "software"
    }

    fn max_groups(&self) -> u32 {
        self.table.groups()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ixgbe_user::ixgbe::Bar0;
    use ixgbe_user::{Model82599, ModelConfig, memory_link};
    use std::sync::{Arc, Mutex};

    /// A control handle over a model port's registers; the RETA is plain register state,
    /// so the model does not need to run.
    fn model_control() -> (Model82599, DeviceControl) {
        let (wire, _peer) = memory_link();
        let config = ModelConfig { dma_window_bytes: 1 << 20, ..ModelConfig::default() };
        let model = Model82599::new(config, Box::new(wire)).unwrap();
        let control = DeviceControl::new(Bar0::from_model(model.handle().registers().clone()));
        (model, control)
    }

    #[test]
    fn reta_steering_with_fewer_groups_rewrites_every_aliasing_entry() {
        let (_model, control) = model_control();
        let mut steering = RetaSteering::new(control.clone(), 32).unwrap();
        steering.set_owner(5, 3).unwrap();
        for index in 0..RETA_ENTRIES {
            let want = if index % 32 == 5 { 3 } else { 0 };
            assert_eq!(control.reta_entry(index).unwrap(), want, "RETA entry {index}");
        }
        assert_eq!(steering.owner(5).unwrap(), 3);
    }

    #[test]
    fn reta_steering_refuses_what_rss_cannot_do() {
        let (_model, control) = model_control();
        assert!(matches!(
            RetaSteering::new(control.clone(), 256),
            Err(SteeringError::TooManyGroups { groups: 256, max: 128 })
        ));
        assert!(matches!(
            RetaSteering::new(control.clone(), 96),
            Err(SteeringError::TooManyGroups { .. })
        ));
        let mut steering = RetaSteering::new(control.clone(), 128).unwrap();
        assert!(matches!(
            steering.set_owner(1, 16),
            Err(SteeringError::InstanceUnreachable { instance: 16, reachable: 16 })
        ));
        assert!(matches!(
            steering.set_owner(128, 1),
            Err(SteeringError::GroupOutOfRange { group: 128, groups: 128 })
        ));
        assert_eq!(control.reta_entry(1).unwrap(), 0, "refused changes leave the RETA alone");
        let table = FlowGroupTable::new(256, 2).unwrap();
        assert!(matches!(steering.apply_table(&table), Err(SteeringError::TooManyGroups { .. })));
    }

    #[test]
    fn reta_steering_applies_a_whole_table() {
        let (_model, control) = model_control();
        let mut steering = RetaSteering::new(control.clone(), 128).unwrap();
        let mut table = FlowGroupTable::new(128, 4).unwrap();
        table.set_owner(9, 3).unwrap();
        steering.apply_table(&table).unwrap();
        for group in 0..128u32 {
            assert_eq!(Some(steering.owner(group).unwrap()), table.owner(group));
        }
    }

    #[test]
    fn software_steering_publishes_accepted_changes_only() {
        let published = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&published);
        let table = FlowGroupTable::new(4096, 3).unwrap();
        let mut steering =
            SoftwareSteering::new(table, move |g, o| sink.lock().unwrap().push((g, o)));
        assert_eq!(steering.max_groups(), 4096);
        assert_eq!(steering.kind(), "software");
        steering.set_owner(4000, 2).unwrap();
        assert!(matches!(
            steering.set_owner(4096, 0),
            Err(SteeringError::GroupOutOfRange { group: 4096, groups: 4096 })
        ));
        assert!(matches!(
            steering.set_owner(0, 3),
            Err(SteeringError::InstanceUnreachable { instance: 3, reachable: 3 })
        ));
        assert_eq!(steering.table().owner(4000), Some(2));
        assert_eq!(*published.lock().unwrap(), vec![(4000, 2)]);
    }
}
