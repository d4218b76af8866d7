# fedstream's access matrix, as data: which role may do what to which Kafka resource. No
# provider, no resource: the kafka module turns it into kafka_acl resources, the cluster
# module into Strimzi KafkaUser ACLs, so both grant exactly the same (README.md has the
# table). Read/Write imply Describe in Kafka; Describe is listed anyway so each row reads as
# what the client does (metadata, offsets).
#
# No cluster-level grant: since Kafka 3.0 (KIP-679) an idempotent producer needs Write on
# some topic rather than IdempotentWrite on the cluster, and a transactional one needs Write
# on its transactional id (tests/integration/test_terraform_kafka.py proves both on 4.2).

terraform {
  required_version = ">= 1.11.0"
}

variable "topics" {
  description = "Topic name by role: {updates, control, models, dlq, devices} (validated by the calling module)."
  type = object({
    updates = string
    control = string
    models  = string
    dlq     = string
    devices = optional(string, "fl.devices")
  })
}

variable "usernames" {
  description = "User name by role: {job, device, owner, auditor}."
  type = object({
    job     = string
    device  = string
    owner   = string
    auditor = string
  })
}

variable "job_group" {
  description = "The job's consumer group (literal)."
  type        = string
}

variable "job_transactional_id_prefix" {
  description = "The job's transactional-id prefix."
  type        = string
}

variable "device_group_prefix" {
  description = "Consumer-group prefix for devices."
  type        = string
}

variable "auditor_group_prefix" {
  description = "Consumer-group prefix for the auditor."
  type        = string
}

locals {
  roles = ["auditor", "device", "job", "owner"]

  grants = {
    job = [
      { type = "Topic", name = var.topics.updates, pattern = "Literal", operations = ["Read", "Describe"] },
      { type = "Topic", name = var.topics.control, pattern = "Literal", operations = ["Read", "Describe"] },
      # Read: on start, the job checks its own releases (none lost to an aborted
      # transaction, none about to be published again from version 0: fedstream.jobs.resume)
      { type = "Topic", name = var.topics.models, pattern = "Literal", operations = ["Read", "Write", "Describe"] },
      { type = "Topic", name = var.topics.dlq, pattern = "Literal", operations = ["Write", "Describe"] },
      # the device registry (public keys): read only. Only the operator (the super user)
      # writes it; a device that could would register keys for other devices' ids.
      { type = "Topic", name = var.topics.devices, pattern = "Literal", operations = ["Read", "Describe"] },
      { type = "Group", name = var.job_group, pattern = "Literal", operations = ["Read"] },
      { type = "TransactionalID", name = var.job_transactional_id_prefix, pattern = "Prefixed", operations = ["Write", "Describe"] },
    ]
    device = [
      # DescribeConfigs: the SDK reads the topic's max.message.bytes to refuse an update
      # that cannot fit before sending it
      { type = "Topic", name = var.topics.updates, pattern = "Literal", operations = ["Write", "Describe", "DescribeConfigs"] },
      { type = "Topic", name = var.topics.models, pattern = "Literal", operations = ["Read", "Describe"] },
      { type = "Group", name = var.device_group_prefix, pattern = "Prefixed", operations = ["Read"] },
    ]
    owner = [
      { type = "Topic", name = var.topics.control, pattern = "Literal", operations = ["Write", "Describe", "DescribeConfigs"] },
      # to follow the releases of the models it registered (`cli releases`, no group)
      { type = "Topic", name = var.topics.models, pattern = "Literal", operations = ["Read", "Describe"] },
    ]
    auditor = [
      { type = "Topic", name = var.topics.updates, pattern = "Literal", operations = ["Read", "Describe"] },
      { type = "Topic", name = var.topics.control, pattern = "Literal", operations = ["Read", "Describe"] },
      { type = "Topic", name = var.topics.models, pattern = "Literal", operations = ["Read", "Describe"] },
      { type = "Topic", name = var.topics.dlq, pattern = "Literal", operations = ["Read", "Describe"] },
      { type = "Topic", name = var.topics.devices, pattern = "Literal", operations = ["Read", "Describe"] },
      { type = "Group", name = var.auditor_group_prefix, pattern = "Prefixed", operations = ["Read"] },
    ]
  }

  acl_list = flatten([
    for role in local.roles : [
      for grant in local.grants[role] : [
        for operation in grant.operations : {
          role          = role
          principal     = "User:${var.usernames[role]}"
          resource_type = grant.type
          resource_name = grant.name
          pattern_type  = grant.pattern
          operation     = operation
        }
      ]
    ]
  ])
}

output "grants" {
  description = "role -> list of {type (Topic, Group, TransactionalID), name, pattern (Literal, Prefixed), operations}."
  value       = local.grants
}

output "acls" {
  description = "One entry per (role, resource, operation), keyed role:type:pattern:name:operation; every entry is an Allow."
  value = {
    for a in local.acl_list :
    "${a.role}:${a.resource_type}:${a.pattern_type}:${a.resource_name}:${a.operation}" => a
  }
}
