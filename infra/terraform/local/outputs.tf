output "topics" {
  description = "Topic name by role."
  value       = module.kafka.topics
}

output "usernames" {
  description = "SCRAM user name by role."
  value       = module.kafka.usernames
}

output "principals" {
  description = "ACL principal by role."
  value       = module.kafka.principals
}

output "acls" {
  description = "Every ACL granted."
  value       = module.kafka.acls
}

output "topic_configs" {
  description = "Partitions, replication factor and config of each topic."
  value       = module.kafka.topic_configs
}
