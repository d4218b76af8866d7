output "topics" {
  description = "Topic name by role (updates, control, models, dlq)."
  value       = { for role, topic in kafka_topic.this : role => topic.name }
}

output "topic_configs" {
  description = "Partitions, replication factor and config of each topic, by role."
  value = {
    for role, topic in kafka_topic.this : role => {
      name               = topic.name
      partitions         = topic.partitions
      replication_factor = topic.replication_factor
      config             = topic.config
    }
  }
}

output "usernames" {
  description = "SCRAM-SHA-512 user name by role (job, device, owner, auditor)."
  value       = { for role, user in kafka_user_scram_credential.role : role => user.username }
}

output "principals" {
  description = "ACL principal (User:<name>) by role."
  value       = { for role in local.roles : role => "User:${var.usernames[role]}" }
}

output "acls" {
  description = "Every ACL the module grants: role, principal, resource type/name/pattern and operation (all Allow, from acl_host)."
  value       = [for key in sort(keys(kafka_acl.this)) : module.matrix.acls[key]]
}

output "dlq_max_message_bytes" {
  description = "max.message.bytes of the dead-letter topic: the larger of the updates and control limits plus dlq_headroom_bytes."
  value       = local.dlq_max_message_bytes
}
