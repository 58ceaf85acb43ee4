//! The [`ChildPlanner`] for callers that read the parent's files through a
//! [`FileSource`] (a commit, or a working tree): `gantry run` and
//! `gantry serve` plan `trigger:include` children with it.

use crate::error::ChildPipelineError;
use crate::ports::ChildPlanner;
use gantry_config::context::Context;
use gantry_config::load::FileSource;
use gantry_config::model::{Job, Pipeline};

/// Plans child pipelines from the parent's files and context.
pub struct FileChildPlanner {
    /// The parent's files (`include:local` and friends resolve here).
    pub files: Box<dyn FileSource + Send + Sync>,
    /// The parent pipeline's context (`trigger:forward` decides what passes).
    pub context: Context,
}

impl ChildPlanner for FileChildPlanner {
    fn plan_child(
        &self,
        trigger_job: &Job,
        generated: Option<(&str, &str)>,
    ) -> Result<Pipeline, ChildPipelineError> {
        let planned = match generated {
            Some((name, text)) => gantry_config::child::plan_child_yaml(
                self.files.as_ref(),
                &self.context,
                trigger_job,
                text,
                name,
            )
            .map(Some),
            None => {
                gantry_config::child::plan_child(self.files.as_ref(), &self.context, trigger_job)
            }
        };
        match planned {
            Ok(Some(child)) => Ok(child.pipeline),
            Ok(None) => Err(ChildPipelineError::Invalid(format!(
                "`{}` names no child configuration",
                trigger_job.name
            ))),
            Err(e) => Err(ChildPipelineError::Invalid(e.to_string())),
        }
    }
}
